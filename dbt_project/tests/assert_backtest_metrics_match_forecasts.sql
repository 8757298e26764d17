{#-
    Reconciles the two backtest tables written by `Warehouse.replace_backtest`: for every
    metrics row (per ticker and pooled `__all__`), n_forecasts and mae equal what
    fct_backtest_forecasts gives for the same run, model, ticker scope and horizon, and so do
    coverage_80 / coverage_95 when every forecast in the scope has that interval. A warning,
    not an error: a mismatch points at the Python side and should not block the dashboards.
    MAE agrees to 1e-6 relative, not closer: the stored log returns come from the model's
    float32 windows (about 7 significant digits), the metrics from the float64 closes; at
    GOOG's price level (about 700) that is a difference of about 1e-6 in the MAE.
-#}
{{ config(severity='warn') }}

with

backtest_metrics as (

    select * from {{ ref('fct_backtest_metrics') }}

),

backtest_forecasts as (

    select * from {{ ref('fct_backtest_forecasts') }}

),

forecast_scopes as (

    select
        backtest_run_id,
        model,
        ticker,
        horizon,
        abs_error,
        is_covered_80,
        is_covered_95

    from backtest_forecasts

    union all

    select
        backtest_run_id,
        model,
        '__all__' as ticker,
        horizon,
        abs_error,
        is_covered_80,
        is_covered_95

    from backtest_forecasts

),

forecast_summaries as (

    select
        backtest_run_id,
        model,
        ticker,
        horizon,
        count(*) as n_forecasts,
        avg(abs_error) as mae,
        count(is_covered_80) as n_with_80,
        count(is_covered_95) as n_with_95,
        avg(case when is_covered_80 then 1.0 when not is_covered_80 then 0.0 end)
            as coverage_80,
        avg(case when is_covered_95 then 1.0 when not is_covered_95 then 0.0 end)
            as coverage_95

    from forecast_scopes
    group by backtest_run_id, model, ticker, horizon

)

select
    backtest_metrics.backtest_run_id,
    backtest_metrics.model,
    backtest_metrics.ticker,
    backtest_metrics.horizon,
    backtest_metrics.n_forecasts,
    forecast_summaries.n_forecasts as n_forecasts_found,
    backtest_metrics.mae,
    forecast_summaries.mae as mae_found,
    backtest_metrics.coverage_80,
    forecast_summaries.coverage_80 as coverage_80_found,
    backtest_metrics.coverage_95,
    forecast_summaries.coverage_95 as coverage_95_found

from backtest_metrics
left join forecast_summaries
    on
        backtest_metrics.backtest_run_id = forecast_summaries.backtest_run_id
        and backtest_metrics.model = forecast_summaries.model
        and backtest_metrics.ticker = forecast_summaries.ticker
        and backtest_metrics.horizon = forecast_summaries.horizon
where
    forecast_summaries.n_forecasts is null
    or backtest_metrics.n_forecasts <> forecast_summaries.n_forecasts
    or abs(backtest_metrics.mae - forecast_summaries.mae)
    > 1e-6 * greatest(1, abs(forecast_summaries.mae))
    or (
        backtest_metrics.coverage_80 is not null
        and forecast_summaries.n_with_80 = forecast_summaries.n_forecasts
        and abs(backtest_metrics.coverage_80 - forecast_summaries.coverage_80) > 1e-9
    )
    or (
        backtest_metrics.coverage_95 is not null
        and forecast_summaries.n_with_95 = forecast_summaries.n_forecasts
        and abs(backtest_metrics.coverage_95 - forecast_summaries.coverage_95) > 1e-9
    )
