{#-
    One row per backtest forecast (backtest_run_id, model, ticker, as_of_date, horizon), in
    price levels for fan charts: the log returns of `ml.backtest_forecasts` are turned into
    closes with as_of_close * exp(log return), for the actual, the forecast and the 80% / 95%
    interval bounds. Coverage is decided on the log-return scale, bounds included (as in
    `ml.evaluate`), and is NULL for forecasts without an interval.
-#}
with

backtest_forecasts as (

    select * from {{ ref('stg_ml__backtest_forecasts') }}

),

backtest_runs as (

    select * from {{ ref('int_backtest_runs_ranked') }}

),

price_levels as (

    select
        *,
        as_of_close * exp(actual_log_return) as actual_close,
        as_of_close * exp(predicted_log_return) as predicted_close,
        as_of_close * exp(lower_80_log_return) as lower_80,
        as_of_close * exp(upper_80_log_return) as upper_80,
        as_of_close * exp(lower_95_log_return) as lower_95,
        as_of_close * exp(upper_95_log_return) as upper_95,
        case
            when lower_80_log_return is null or upper_80_log_return is null then null
            else
                actual_log_return >= lower_80_log_return
                and actual_log_return <= upper_80_log_return
        end as is_covered_80,
        case
            when lower_95_log_return is null or upper_95_log_return is null then null
            else
                actual_log_return >= lower_95_log_return
                and actual_log_return <= upper_95_log_return
        end as is_covered_95

    from backtest_forecasts

),

forecast_errors as (

    select
        *,
        predicted_close - actual_close as forecast_error,
        abs(predicted_close - actual_close) as abs_error,
        abs(as_of_close - actual_close) as naive_abs_error

    from price_levels

),

final as (

    select
        forecast_errors.backtest_run_id,
        forecast_errors.model,
        forecast_errors.ticker,
        forecast_errors.as_of_date,
        forecast_errors.horizon,
        forecast_errors.fold,
        forecast_errors.as_of_close,
        forecast_errors.actual_close,
        forecast_errors.predicted_close,
        forecast_errors.lower_80,
        forecast_errors.upper_80,
        forecast_errors.lower_95,
        forecast_errors.upper_95,
        forecast_errors.actual_log_return,
        forecast_errors.predicted_log_return,
        forecast_errors.forecast_error,
        forecast_errors.abs_error,
        forecast_errors.naive_abs_error,
        forecast_errors.is_covered_80,
        forecast_errors.is_covered_95,
        coalesce(backtest_runs.is_latest_backtest, false) as is_latest_backtest

    from forecast_errors
    left join backtest_runs
        on forecast_errors.backtest_run_id = backtest_runs.backtest_run_id

)

select * from final
