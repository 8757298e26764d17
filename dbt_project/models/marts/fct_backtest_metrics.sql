{#-
    One row per (backtest_run_id, model, ticker, horizon): walk-forward accuracy of a model
    next to the naive "no change" forecast on the same forecasts, with dashboard flags:
      * is_pooled: the row pooled over all tickers (ticker '__all__');
      * beats_naive: rel_mae < 1 (the model's MAE is below naive's);
      * is_significant_at_5pct: the Diebold-Mariano test says the model's errors are
        smaller than naive's (dm_stat < 0) at the 5% level;
      * coverage_gap_80/95: empirical minus nominal coverage (negative = intervals too narrow);
      * is_latest_backtest: the row belongs to the newest run (max created_at).
    Flags are NULL where their inputs are (e.g. no DM test for naive, no intervals).
-#}
with

backtest_metrics as (

    select * from {{ ref('stg_ml__backtest_metrics') }}

),

backtest_runs as (

    select * from {{ ref('int_backtest_runs_ranked') }}

),

joined as (

    select
        backtest_metrics.*,
        backtest_runs.is_latest_backtest

    from backtest_metrics
    inner join backtest_runs
        on backtest_metrics.backtest_run_id = backtest_runs.backtest_run_id

),

flagged as (

    select
        *,
        ticker = '__all__' as is_pooled,
        rel_mae < 1 as beats_naive,
        dm_pvalue < 0.05 and dm_stat < 0 as is_significant_at_5pct,
        coverage_80 - 0.80 as coverage_gap_80,
        coverage_95 - 0.95 as coverage_gap_95

    from joined

),

final as (

    select
        backtest_run_id,
        model,
        ticker,
        horizon,
        is_pooled,
        n_forecasts,
        mae,
        rmse,
        mape,
        rel_mae,
        beats_naive,
        mase,
        directional_accuracy,
        dm_stat,
        dm_pvalue,
        is_significant_at_5pct,
        coverage_80,
        coverage_gap_80,
        width_80,
        winkler_80,
        coverage_95,
        coverage_gap_95,
        width_95,
        winkler_95,
        pinball,
        n_folds,
        first_as_of,
        last_as_of,
        created_at,
        is_latest_backtest

    from flagged

)

select * from final
