with

source as (

    select * from {{ source('raw', 'rejected_rows') }}

),

renamed as (

    select
        source_file,
        line_number,
        ticker,
        trade_date,
        column_name,
        reason,
        rejected_at

    from source

)

select * from renamed
