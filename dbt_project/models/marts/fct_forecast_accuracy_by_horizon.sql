{#-
    Realized accuracy of each model version by horizon, over every forecast whose actual close
    is loaded. One row per (model_name, model_version, ticker, horizon); `ticker = '__all__'`
    pools every ticker. Errors are on the log-return scale (|ln(forecast / actual)|), so the
    pooled row weighs tickers alike whatever their price; rel_mae is the model's mean error over
    the naive "no change" forecast's on the same forecasts (below 1 beats naive).
-#}
with

forecasts_vs_actuals as (

    select * from {{ ref('fct_forecasts_vs_actuals') }}

),

realized as (

    select * from forecasts_vs_actuals
    where
        is_actual_known
        and naive_abs_log_error is not null
        and not coalesce(is_in_sample, false)

),

by_ticker as (

    select
        model_name,
        model_version,
        ticker,
        horizon,
        count(*) as n_forecasts,
        min(as_of_date) as first_as_of_date,
        max(as_of_date) as last_as_of_date,
        max(target_date) as last_target_date,
        sum(abs_log_error) as sum_abs_log_error,
        sum(naive_abs_log_error) as sum_naive_abs_log_error,
        sum(abs(pct_error)) as sum_abs_pct_error,
        count(is_covered_80) as n_intervals_80,
        sum(case when is_covered_80 then 1 else 0 end) as n_covered_80,
        count(is_covered_95) as n_intervals_95,
        sum(case when is_covered_95 then 1 else 0 end) as n_covered_95

    from realized
    group by model_name, model_version, ticker, horizon

),

pooled as (

    select
        model_name,
        model_version,
        '__all__' as ticker,
        horizon,
        sum(n_forecasts) as n_forecasts,
        min(first_as_of_date) as first_as_of_date,
        max(last_as_of_date) as last_as_of_date,
        max(last_target_date) as last_target_date,
        sum(sum_abs_log_error) as sum_abs_log_error,
        sum(sum_naive_abs_log_error) as sum_naive_abs_log_error,
        sum(sum_abs_pct_error) as sum_abs_pct_error,
        sum(n_intervals_80) as n_intervals_80,
        sum(n_covered_80) as n_covered_80,
        sum(n_intervals_95) as n_intervals_95,
        sum(n_covered_95) as n_covered_95

    from by_ticker
    group by model_name, model_version, horizon

),

grouped as (

    select * from by_ticker
    union all
    select * from pooled

),

final as (

    select
        model_name,
        model_version,
        ticker,
        horizon,
        n_forecasts,
        first_as_of_date,
        last_as_of_date,
        last_target_date,
        sum_abs_log_error / n_forecasts as mean_abs_log_error,
        sum_naive_abs_log_error / n_forecasts as naive_mean_abs_log_error,
        sum_abs_log_error / nullif(sum_naive_abs_log_error, 0) as rel_mae,
        sum_abs_pct_error / n_forecasts as mape,
        n_intervals_80,
        cast(n_covered_80 as {{ stockcast.type_double() }})
        / nullif(n_intervals_80, 0) as coverage_80,
        n_intervals_95,
        cast(n_covered_95 as {{ stockcast.type_double() }})
        / nullif(n_intervals_95, 0) as coverage_95

    from grouped

)

select * from final
