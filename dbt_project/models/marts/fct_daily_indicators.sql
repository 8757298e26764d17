{#-
    One row per (ticker, trade_date): the bar and its technical indicators, equal to TA-Lib's
    SMA, EMA, MACD(12, 26, 9) and RSI(14) on the ticker's closes (NULL during warm-up).
-#}
{{ config(partition_by=stockcast.month_partition('trade_date')) }}

with

prices as (

    select * from {{ ref('int_prices_sequenced') }}

),

moving_averages as (

    select * from {{ ref('int_moving_averages_computed') }}

),

emas as (

    select * from {{ ref('int_ema_computed') }}

),

macd as (

    select * from {{ ref('int_macd_computed') }}

),

rsi as (

    select * from {{ ref('int_rsi_computed') }}

),

final as (

    select
        prices.ticker,
        prices.trade_date,
        prices.price_index,
        prices.open,
        prices.high,
        prices.low,
        prices.close,
        prices.adj_close,
        prices.volume,
        moving_averages.sma_5,
        moving_averages.sma_15,
        moving_averages.sma_20,
        moving_averages.sma_50,
        emas.ema_12,
        emas.ema_26,
        macd.macd,
        macd.macd_signal,
        macd.macd_hist,
        rsi.rsi_14

    from prices
    inner join moving_averages
        on
            prices.ticker = moving_averages.ticker
            and prices.trade_date = moving_averages.trade_date
    inner join emas
        on
            prices.ticker = emas.ticker
            and prices.trade_date = emas.trade_date
    inner join macd
        on
            prices.ticker = macd.ticker
            and prices.trade_date = macd.trade_date
    inner join rsi
        on
            prices.ticker = rsi.ticker
            and prices.trade_date = rsi.trade_date

)

select * from final
