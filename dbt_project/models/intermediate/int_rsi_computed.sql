{#-
    RSI(14) exactly as TA-Lib computes it (Wilder smoothing):
      * change_t = close_t - close_(t-1); gain = max(change, 0), loss = max(-change, 0);
      * at bar 14 the averages are the means of gains / losses over bars 1..14, then
        avg_t = (13 * avg_(t-1) + value_t) / 14, i.e. an EMA of alpha 1/14;
      * rsi = 100 * avg_gain / (avg_gain + avg_loss); NULL before bar 14;
      * 0 only when both averages are exactly 0, i.e. no close has moved yet (checked against
        talib: its zero test is exact, even averages of 1e-310 give 100).
    During a run of unchanged closes both averages decay by the same factor, so the RSI stays
    at its value from the last move. After two blocks (about 1,600 bars) of unchanged closes the
    smoothing's truncated sums reach exactly 0 while TA-Lib's are still positive, so the RSI of
    the last bar with non-zero averages is carried forward instead.
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
        average_gain,
        average_loss,
        rsi_14

    from indicator_values

)

select * from final
