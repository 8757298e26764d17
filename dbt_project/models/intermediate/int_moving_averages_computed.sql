{#-
    Simple moving averages of close (TA-Lib SMA): the mean of the last n closes, NULL for the
    first n - 1 bars of each ticker.
-#}
{%- set periods = [5, 15, 20, 50] %}

with

prices as (

    select * from {{ ref('int_prices_sequenced') }}

),

moving_averages as (

    select
        ticker,
        trade_date,
        price_index,
        {%- for n in periods %}
        case
            when price_index >= {{ n - 1 }}
                then avg(close) over (
                    partition by ticker
                    order by price_index
                    rows between {{ n - 1 }} preceding and current row
                )
        end as sma_{{ n }}{{ "," if not loop.last }}
        {%- endfor %}

    from prices

)

select * from moving_averages
