{#-
    One row per calendar day from the first to the last NYSE session of the `nyse_sessions`
    seed. `session_number` counts the sessions on or before the day (1 for the first session;
    a closed day carries the number of the session before it), so the sessions strictly
    between two days d1 < d2 number session_number(d2) - is_session(d2) - session_number(d1).
    Days outside the seed's span have no row: the data-quality marts do not judge them.
-#}
with

sessions as (

    select * from {{ ref('nyse_sessions') }}

),

day_offsets as (

    {#- 1 .. 31: the days from a session up to the next one (the longest NYSE closure
        since 1990 is 2001-09-11 .. 09-16, 6 days). -#}
    {{ dbt.generate_series(31) }}

),

sessions_numbered as (

    select
        session_date,
        row_number() over (order by session_date) as session_number,
        lead(session_date) over (order by session_date) as next_session_date

    from sessions

),

calendar_days as (

    select
        sessions_numbered.session_number,
        sessions_numbered.next_session_date,
        day_offsets.generated_number = 1 as is_session,
        {{ dbt.dateadd(
            'day', 'day_offsets.generated_number - 1', 'sessions_numbered.session_date'
        ) }} as calendar_date

    from sessions_numbered
    cross join day_offsets

),

final as (

    select
        cast(calendar_date as date) as calendar_date,
        is_session,
        session_number

    from calendar_days
    where is_session or calendar_date < next_session_date

)

select * from final
