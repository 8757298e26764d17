{#-
    One row per (ticker, trade_date): the bar and its technical indicators, equal to TA-Lib's
    SMA, EMA, MACD(12, 26, 9) and RSI(14) on the ticker's closes (NULL during warm-up).

    Incremental: the first build computes every bar (daily_indicator_ctes macro). Later runs
    recompute only the tickers with new or corrected bars (indicator_increments.sql), from
    their first changed bar on: the pre-hook deletes those rows, and this model continues each
    ticker from the stored indicators of its last kept bar (the exact recursion state) with
    the 49 bars before it as context. `dbt build --full-refresh` recomputes everything.
    On DuckDB the hooks also keep a resume state (each ticker's last 50 bars, in
    intermediate.fct_daily_indicators__resume_state): a daily run then reads the new bars and
    that state instead of the whole history.
-#}
{{ config(
    materialized='incremental',
    incremental_strategy=stockcast.indicator_incremental_strategy(),
    unique_key=['ticker', 'trade_date'],
    on_schema_change='append_new_columns',
    partition_by=stockcast.month_partition('trade_date'),
    pre_hook="{{ stockcast.delete_changed_indicator_rows() }}",
    post_hook="{{ stockcast.refresh_indicator_resume_state() }}",
) }}

{%- set stateful = is_incremental() and stockcast.indicator_state_available(this) %}
{%- set resume = stockcast.indicator_resume_point(this, ref('stg_raw__daily_prices'))
    if stateful else none %}

with

prices as (

    select * from {{ ref('stg_raw__daily_prices') }}

),

{{ stockcast.indicator_input_ctes('prices', this if stateful else none, resume) }},

{{ stockcast.daily_indicator_ctes(
    'indicator_inputs', stateful=stateful, carry=stockcast.indicator_carried_columns()
) }},

final as (

    select
        ticker,
        trade_date,
        price_index,
        open,
        high,
        low,
        close,
        adj_close,
        volume,
        sma_5,
        sma_15,
        sma_20,
        sma_50,
        ema_12,
        ema_26,
        macd,
        macd_signal,
        macd_hist,
        rsi_14,
        average_gain as rsi_average_gain,
        average_loss as rsi_average_loss,
        ingested_at

    from indicator_values
    {#- a resumed ticker's context bars (up to its state bar) are already stored #}
    where state_index is null or price_index > state_index

)

select * from final
