{#-
    Simple moving averages of close (TA-Lib SMA): the mean of the last n closes, NULL for the
    first n - 1 bars of each ticker.
-#}

with

prices as (

    select * from {{ ref('int_prices_sequenced') }}

),

final as (

    select
        ticker,
        trade_date,
        price_index,
        case
            when price_index >= 4
                then avg(close) over (
                    partition by ticker
                    order by price_index
                    rows between 4 preceding and current row
                )
        end as sma_5,
        case
            when price_index >= 14
                then avg(close) over (
                    partition by ticker
                    order by price_index
                    rows between 14 preceding and current row
                )
        end as sma_15,
        case
            when price_index >= 19
                then avg(close) over (
                    partition by ticker
                    order by price_index
                    rows between 19 preceding and current row
                )
        end as sma_20,
        case
            when price_index >= 49
                then avg(close) over (
                    partition by ticker
                    order by price_index
                    rows between 49 preceding and current row
                )
        end as sma_50

    from prices

)

select * from final
