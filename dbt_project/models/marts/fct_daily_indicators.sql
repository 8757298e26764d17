{#-
    One row per (ticker, trade_date): the bar and its technical indicators, equal to TA-Lib's
    SMA, EMA, MACD(12, 26, 9) and RSI(14) on the ticker's closes (NULL during warm-up).

    Incremental: the first build computes every bar (daily_indicator_ctes macro). Later runs
    recompute only the tickers with new or corrected bars (indicator_increments.sql), from
    their first changed bar on: the pre-hook deletes those rows, and this model continues each
    ticker from the stored indicators of its last kept bar (the exact recursion state) with
    the 49 bars before it as context. `dbt build --full-refresh` recomputes everything.
-#}
{{ config(
    materialized='incremental',
    incremental_strategy=stockcast.indicator_incremental_strategy(),
    unique_key=['ticker', 'trade_date'],
    on_schema_change='append_new_columns',
    partition_by=stockcast.month_partition('trade_date'),
    pre_hook="{{ stockcast.delete_changed_indicator_rows() }}",
) }}

{%- set stateful = is_incremental() and stockcast.indicator_state_available(this) %}

with

prices as (

    select * from {{ ref('stg_raw__daily_prices') }}

),

{%- if stateful %}

stored as (

    select * from {{ this }}

),

stored_tails as (

    select
        ticker,
        max(price_index) as state_index,
        max(trade_date) as state_date

    from stored
    group by ticker

),

new_prices as (

    select
        prices.*,
        stored_tails.state_index

    from prices
    left join stored_tails
        on prices.ticker = stored_tails.ticker
    where stored_tails.ticker is null or prices.trade_date > stored_tails.state_date

),

resumed_tickers as (

    select distinct
        ticker,
        state_index

    from new_prices
    where state_index is not null

),

{#- The indicators stored for each resumed ticker's last kept bar. MACD's fast EMA is not
    stored: it is macd + ema_26. -#}
stored_states as (

    select
        stored.ticker,
        stored.price_index as state_index,
        stored.ema_12 as state_ema_12,
        stored.ema_26 as state_ema_26,
        stored.macd + stored.ema_26 as state_macd_fast_ema,
        stored.rsi_average_gain as state_average_gain,
        stored.rsi_average_loss as state_average_loss,
        stored.macd_signal as state_macd_signal,
        stored.rsi_14 as state_rsi_14

    from stored
    inner join resumed_tickers
        on
            stored.ticker = resumed_tickers.ticker
            and stored.price_index = resumed_tickers.state_index

),

context_bars as (

    select
        stored.ticker,
        stored.trade_date,
        stored.close

    from stored
    inner join resumed_tickers
        on
            stored.ticker = resumed_tickers.ticker
            and stored.price_index
            > resumed_tickers.state_index - {{ stockcast.indicator_context_bars() }}

),

indicator_inputs as (

    select
        bars.ticker,
        bars.trade_date,
        bars.close,
        coalesce(
            stored_states.state_index - {{ stockcast.indicator_context_bars() - 1 }}, 0
        ) as index_offset,
        stored_states.state_index,
        stored_states.state_ema_12,
        stored_states.state_ema_26,
        stored_states.state_macd_fast_ema,
        stored_states.state_average_gain,
        stored_states.state_average_loss,
        stored_states.state_macd_signal,
        stored_states.state_rsi_14

    from (
        select
            ticker,
            trade_date,
            close
        from context_bars
        union all
        select
            ticker,
            trade_date,
            close
        from new_prices
    ) as bars
    left join stored_states
        on bars.ticker = stored_states.ticker

),

output_prices as (

    select * from new_prices

),

{%- else %}

indicator_inputs as (

    select
        ticker,
        trade_date,
        close,
        0 as index_offset

    from prices

),

output_prices as (

    select * from prices

),

{%- endif %}

{{ stockcast.daily_indicator_ctes('indicator_inputs', stateful=stateful) }},

final as (

    select
        output_prices.ticker,
        output_prices.trade_date,
        indicator_values.price_index,
        output_prices.open,
        output_prices.high,
        output_prices.low,
        output_prices.close,
        output_prices.adj_close,
        output_prices.volume,
        indicator_values.sma_5,
        indicator_values.sma_15,
        indicator_values.sma_20,
        indicator_values.sma_50,
        indicator_values.ema_12,
        indicator_values.ema_26,
        indicator_values.macd,
        indicator_values.macd_signal,
        indicator_values.macd_hist,
        indicator_values.rsi_14,
        indicator_values.average_gain as rsi_average_gain,
        indicator_values.average_loss as rsi_average_loss,
        output_prices.ingested_at

    from indicator_values
    inner join output_prices
        on
            indicator_values.ticker = output_prices.ticker
            and indicator_values.trade_date = output_prices.trade_date

)

select * from final
