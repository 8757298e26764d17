{#-
    MACD(12, 26, 9) exactly as TA-Lib's MACD computes it (not from the standalone EMAs):
      * slow EMA(26) seeded at bar 25 with the SMA of closes 0..25;
      * fast EMA(12) ALSO seeded at bar 25 (TA-Lib aligns its start with the slow one), with the
        SMA of closes 14..25;
      * macd line = fast - slow from bar 25;
      * signal = EMA(9) of the macd line seeded at bar 33 with the mean of the line over 25..33;
      * all three outputs are NULL before bar 33, where TA-Lib starts its output.
    Computed by the daily_indicator_ctes macro (the code that builds fct_daily_indicators); a
    view.
-#}
{{ config(materialized='view') }}

with

prices as (

    select
        ticker,
        trade_date,
        close,
        0 as index_offset

    from {{ ref('int_prices_sequenced') }}

),

{{ stockcast.daily_indicator_ctes('prices') }},

final as (

    select
        ticker,
        trade_date,
        price_index,
        macd,
        macd_signal,
        macd_hist

    from indicator_values

)

select * from final
