{#-
    Exponential moving averages of close (TA-Lib EMA): k = 2 / (n + 1), first value at bar n - 1
    equal to the SMA of the first n closes, then ema_t = k * close_t + (1 - k) * ema_(t-1).
    Computed without recursion by the daily_indicator_ctes macro (the code that builds
    fct_daily_indicators); a view.
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
        ema_12,
        ema_26

    from indicator_values

)

select * from final
