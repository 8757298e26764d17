{#-
    One row per ticker: the size and span of its loaded history and its data-quality counts
    (NYSE sessions missing, bars off the calendar, extreme returns, source changes), the
    dashboard's summary of the three data-quality marts.
-#}
with

price_changes as (

    select * from {{ ref('int_price_changes_computed') }}

),

gaps as (

    select * from {{ ref('fct_price_gaps') }}

),

extreme_returns as (

    select * from {{ ref('fct_extreme_returns') }}

),

source_changes as (

    select * from {{ ref('fct_source_changes') }}

),

histories as (

    select
        ticker,
        count(*) as bars,
        min(trade_date) as first_trade_date,
        max(trade_date) as last_trade_date,
        count(distinct source_file) as source_files,
        cast(sum(case when is_session is null then 1 else 0 end) as {{ dbt.type_bigint() }})
            as bars_outside_calendar,
        cast(sum(case when not is_session then 1 else 0 end) as {{ dbt.type_bigint() }})
            as bars_on_closed_days

    from price_changes
    group by ticker

),

gaps_per_ticker as (

    select
        ticker,
        count(*) as price_gaps,
        cast(sum(sessions_missed) as {{ dbt.type_bigint() }}) as sessions_missing,
        max(sessions_missed) as longest_gap_sessions

    from gaps
    group by ticker

),

extreme_returns_per_ticker as (

    select
        ticker,
        count(*) as extreme_returns,
        cast(sum(case when looks_like_split then 1 else 0 end) as {{ dbt.type_bigint() }})
            as split_like_returns

    from extreme_returns
    group by ticker

),

source_changes_per_ticker as (

    select
        ticker,
        count(*) as source_changes,
        cast(sum(case when is_extreme_return then 1 else 0 end) as {{ dbt.type_bigint() }})
            as source_changes_with_extreme_return

    from source_changes
    group by ticker

),

final as (

    select
        histories.ticker,
        histories.bars,
        histories.first_trade_date,
        histories.last_trade_date,
        histories.source_files,
        histories.bars_outside_calendar,
        histories.bars_on_closed_days,
        coalesce(gaps_per_ticker.price_gaps, 0) as price_gaps,
        coalesce(gaps_per_ticker.sessions_missing, 0) as sessions_missing,
        coalesce(gaps_per_ticker.longest_gap_sessions, 0) as longest_gap_sessions,
        coalesce(extreme_returns_per_ticker.extreme_returns, 0) as extreme_returns,
        coalesce(extreme_returns_per_ticker.split_like_returns, 0) as split_like_returns,
        coalesce(source_changes_per_ticker.source_changes, 0) as source_changes,
        coalesce(source_changes_per_ticker.source_changes_with_extreme_return, 0)
            as source_changes_with_extreme_return,
        (
            coalesce(gaps_per_ticker.price_gaps, 0)
            + histories.bars_on_closed_days
            + coalesce(extreme_returns_per_ticker.extreme_returns, 0)
            + coalesce(source_changes_per_ticker.source_changes, 0)
        ) = 0 as is_clean

    from histories
    left join gaps_per_ticker
        on histories.ticker = gaps_per_ticker.ticker
    left join extreme_returns_per_ticker
        on histories.ticker = extreme_returns_per_ticker.ticker
    left join source_changes_per_ticker
        on histories.ticker = source_changes_per_ticker.ticker

)

select * from final
