{#-
    One row per ticker with refused rows: how many lines of its files ingest refused, from how
    many files, and when the last was refused. The dashboard's overview shows it beside each
    ticker; a ticker with none has no row. Lines whose ticker could not be read are left out.
-#}
with

rejected_rows as (

    select * from {{ ref('stg_raw__rejected_rows') }}

),

refused_per_ticker as (

    select
        ticker,
        count(*) as rows_refused,
        count(distinct source_file) as files_with_refused_rows,
        max(rejected_at) as last_rejected_at

    from rejected_rows
    where ticker is not null
    group by ticker

)

select * from refused_per_ticker
