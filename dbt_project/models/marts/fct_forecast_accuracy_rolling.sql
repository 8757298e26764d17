{#-
    Realized accuracy over a trailing window of target dates. One row per (model_name,
    model_version, ticker, target_date) with at least one realized forecast (the actual close
    at target_date is loaded); `ticker = '__all__'` pools every ticker of the model version.

    The window is the `accuracy_window_sessions` NYSE sessions (var, default 63: about three
    months) ending at target_date, counted on the session calendar (int_calendar_days_numbered),
    so a session without realized forecasts still uses up its place in the window. Every horizon
    counts. Each model version has its own window: a new champion starts from nothing.

      * mean_abs_log_error / naive_mean_abs_log_error: mean |ln(forecast / actual)| of the model
        and of the naive "no change" forecast (the as-of close) over the window's forecasts;
      * rel_mae = mean_abs_log_error / naive_mean_abs_log_error (below 1 beats naive; NULL when
        naive's error is 0);
      * coverage_80 / coverage_95: share of the window's actuals inside the interval (forecasts
        with an interval only; NULL when none has one); coverage_gap_* = coverage - nominal
        (negative: the intervals are too narrow).
-#}
{%- set window_sessions = var('accuracy_window_sessions') -%}
{%- set trailing -%}
    partition by model_name, model_version, ticker
    order by target_session_number
    range between {{ window_sessions - 1 }} preceding and current row
{%- endset -%}

with

forecasts_vs_actuals as (

    select * from {{ ref('fct_forecasts_vs_actuals') }}

),

calendar_days as (

    select * from {{ ref('int_calendar_days_numbered') }}

),

realized as (

    select
        forecasts_vs_actuals.model_name,
        forecasts_vs_actuals.model_version,
        forecasts_vs_actuals.ticker,
        forecasts_vs_actuals.target_date,
        calendar_days.session_number as target_session_number,
        forecasts_vs_actuals.abs_log_error,
        forecasts_vs_actuals.naive_abs_log_error,
        forecasts_vs_actuals.is_covered_80,
        forecasts_vs_actuals.is_covered_95

    from forecasts_vs_actuals
    inner join calendar_days
        on forecasts_vs_actuals.target_date = calendar_days.calendar_date
    where
        forecasts_vs_actuals.is_actual_known
        and forecasts_vs_actuals.naive_abs_log_error is not null
        and not coalesce(forecasts_vs_actuals.is_in_sample, false)

),

daily_by_ticker as (

    select
        model_name,
        model_version,
        ticker,
        target_date,
        target_session_number,
        count(*) as n_forecasts,
        sum(abs_log_error) as sum_abs_log_error,
        sum(naive_abs_log_error) as sum_naive_abs_log_error,
        count(is_covered_80) as n_intervals_80,
        sum(case when is_covered_80 then 1 else 0 end) as n_covered_80,
        count(is_covered_95) as n_intervals_95,
        sum(case when is_covered_95 then 1 else 0 end) as n_covered_95

    from realized
    group by model_name, model_version, ticker, target_date, target_session_number

),

daily_pooled as (

    select
        model_name,
        model_version,
        '__all__' as ticker,
        target_date,
        target_session_number,
        sum(n_forecasts) as n_forecasts,
        sum(sum_abs_log_error) as sum_abs_log_error,
        sum(sum_naive_abs_log_error) as sum_naive_abs_log_error,
        sum(n_intervals_80) as n_intervals_80,
        sum(n_covered_80) as n_covered_80,
        sum(n_intervals_95) as n_intervals_95,
        sum(n_covered_95) as n_covered_95

    from daily_by_ticker
    group by model_name, model_version, target_date, target_session_number

),

daily as (

    select * from daily_by_ticker
    union all
    select * from daily_pooled

),

windowed as (

    select
        model_name,
        model_version,
        ticker,
        target_date,
        target_session_number,
        n_forecasts,
        min(target_date) over ({{ trailing }}) as window_first_target_date,
        count(*) over ({{ trailing }}) as window_sessions_with_forecasts,
        sum(n_forecasts) over ({{ trailing }}) as window_forecasts,
        sum(sum_abs_log_error) over ({{ trailing }}) as window_sum_abs_log_error,
        sum(sum_naive_abs_log_error) over ({{ trailing }}) as window_sum_naive_abs_log_error,
        sum(n_intervals_80) over ({{ trailing }}) as window_intervals_80,
        sum(n_covered_80) over ({{ trailing }}) as window_covered_80,
        sum(n_intervals_95) over ({{ trailing }}) as window_intervals_95,
        sum(n_covered_95) over ({{ trailing }}) as window_covered_95

    from daily

),

ratios as (

    select
        *,
        window_sum_abs_log_error / window_forecasts as mean_abs_log_error,
        window_sum_naive_abs_log_error / window_forecasts as naive_mean_abs_log_error,
        window_sum_abs_log_error
        / nullif(window_sum_naive_abs_log_error, 0) as rel_mae,
        cast(window_covered_80 as {{ stockcast.type_double() }})
        / nullif(window_intervals_80, 0) as coverage_80,
        cast(window_covered_95 as {{ stockcast.type_double() }})
        / nullif(window_intervals_95, 0) as coverage_95

    from windowed

),

final as (

    select
        model_name,
        model_version,
        ticker,
        target_date,
        target_session_number,
        window_first_target_date,
        window_sessions_with_forecasts,
        n_forecasts,
        window_forecasts,
        mean_abs_log_error,
        naive_mean_abs_log_error,
        rel_mae,
        window_intervals_80,
        coverage_80,
        window_intervals_95,
        coverage_95,
        coverage_80 - 0.80 as coverage_gap_80,
        coverage_95 - 0.95 as coverage_gap_95

    from ratios

)

select * from final
