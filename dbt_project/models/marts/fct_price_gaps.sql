{#-
    One row per (ticker, gap): consecutive bars of a ticker with at least one NYSE session
    between them that has no bar. Only inside a ticker's history (between its first and last
    bar) and only where both bars fall in the span of the `nyse_sessions` seed.
-#}
with

price_changes as (

    select * from {{ ref('int_price_changes_computed') }}

),

calendar_days as (

    select * from {{ ref('int_calendar_days_numbered') }}

),

sessions as (

    select
        calendar_date as session_date,
        session_number

    from calendar_days
    where is_session

),

gaps as (

    select *
    from price_changes
    where sessions_missed >= 1

),

final as (

    select
        gaps.ticker,
        gaps.previous_trade_date as last_date_before,
        gaps.trade_date as first_date_after,
        first_missing.session_date as first_missing_session,
        last_missing.session_date as last_missing_session,
        gaps.sessions_missed,
        {{ dbt.datediff('gaps.previous_trade_date', 'gaps.trade_date', 'day') }}
            as calendar_days,
        gaps.previous_close as close_before,
        gaps.close as close_after,
        gaps.close_return,
        gaps.previous_source_file as source_file_before,
        gaps.source_file as source_file_after

    from gaps
    inner join sessions as first_missing
        on gaps.previous_session_number + 1 = first_missing.session_number
    inner join sessions as last_missing
        on gaps.previous_session_number + gaps.sessions_missed = last_missing.session_number

)

select * from final
