{#-
    Exactly one backtest run is flagged latest in fct_backtest_metrics (when there is any
    run), and a run is flagged on all of its rows or none. Returns the offending runs.
-#}
with

backtest_metrics as (

    select * from {{ ref('fct_backtest_metrics') }}

),

runs as (

    select
        backtest_run_id,
        min(case when is_latest_backtest then 1 else 0 end) as min_latest,
        max(case when is_latest_backtest then 1 else 0 end) as max_latest

    from backtest_metrics
    group by backtest_run_id

),

totals as (

    select
        count(*) as n_runs,
        sum(max_latest) as n_latest_runs

    from runs

)

select
    runs.backtest_run_id,
    runs.min_latest,
    runs.max_latest,
    totals.n_runs,
    totals.n_latest_runs

from runs
cross join totals
where
    runs.min_latest <> runs.max_latest
    or totals.n_latest_runs <> 1
