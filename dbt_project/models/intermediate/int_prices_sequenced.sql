{#-
    Numbers each ticker's bars 0, 1, 2, ... in trade_date order: the indicator models define
    warm-up periods and seeds by this index, exactly as TA-Lib does on an array of closes.
-#}
{{ config(materialized='view') }}

with

prices as (

    select * from {{ ref('stg_raw__daily_prices') }}

),

final as (

    select
        ticker,
        trade_date,
        open,
        high,
        low,
        close,
        adj_close,
        volume,
        source_file,
        row_number() over (
            partition by ticker
            order by trade_date
        ) - 1 as price_index

    from prices

)

select * from final
