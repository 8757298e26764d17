with

source as (

    select * from {{ source('raw', 'daily_prices') }}

),

renamed as (

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
        ingested_at

    from source

)

select * from renamed
