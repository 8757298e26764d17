{#-
    One row per backtest run, newest first: `backtest_rank` 1 is the run stored last (max
    created_at; ties, which replace_backtest cannot produce in practice, go to the greater
    run id so that exactly one run is the latest).
-#}
with

backtest_metrics as (

    select * from {{ ref('stg_ml__backtest_metrics') }}

),

runs as (

    select
        backtest_run_id,
        max(created_at) as created_at,
        min(first_as_of) as first_as_of,
        max(last_as_of) as last_as_of,
        max(n_folds) as n_folds,
        count(distinct model) as n_models

    from backtest_metrics
    group by backtest_run_id

),

ranked as (

    select
        *,
        row_number() over (
            order by created_at desc, backtest_run_id desc
        ) as backtest_rank

    from runs

),

final as (

    select
        backtest_run_id,
        created_at,
        first_as_of,
        last_as_of,
        n_folds,
        n_models,
        backtest_rank,
        backtest_rank = 1 as is_latest_backtest

    from ranked

)

select * from final
