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

{{ stockcast.indicator_input_ctes('prices', this if stateful else none) }},

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
