{#-
    Simple moving averages of close (TA-Lib SMA): the mean of the last n closes, NULL for the
    first n - 1 bars of each ticker. A view on the daily_indicator_ctes macro, the code that
    builds fct_daily_indicators (the unit tests check that code on TA-Lib's values).
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
        sma_5,
        sma_15,
        sma_20,
        sma_50

    from indicator_values

)

select * from final
