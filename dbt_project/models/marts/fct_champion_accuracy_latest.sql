{#-
    The latest realized accuracy of every model that published forecasts: one row per
    (model_name, model_version). Only the champion (or, while none exists, the naive_ewma
    baseline) publishes forecasts, so each row is a champion's record; `is_current` marks the
    one that wrote the most recent forecasts (the champion now, as far as the warehouse knows).

    The figures are the pooled (`ticker = '__all__'`) row of fct_forecast_accuracy_rolling at
    the version's last realized target date: rel_mae and coverage over the trailing
    `accuracy_window_sessions` sessions. NULL while none of its forecasts is due yet.
-#}
with

forecasts as (

    select * from {{ ref('stg_ml__predicted_prices') }}

),

rolling_accuracy as (

    select * from {{ ref('fct_forecast_accuracy_rolling') }}

),

versions_scored as (

    select
        model_name,
        model_version,
        min(as_of_date) as first_as_of_date,
        max(as_of_date) as last_as_of_date,
        max(scored_at) as last_scored_at,
        count(*) as n_forecasts_scored

    from forecasts
    group by model_name, model_version

),

versions_ranked as (

    select
        *,
        row_number() over (
            order by last_scored_at desc, last_as_of_date desc, model_version desc
        ) as recency_rank

    from versions_scored

),

pooled_ranked as (

    select
        *,
        row_number() over (
            partition by model_name, model_version order by target_date desc
        ) as latest_rank,
        sum(n_forecasts) over (partition by model_name, model_version) as n_realized_forecasts

    from rolling_accuracy
    where ticker = '__all__'

),

latest_pooled as (

    select * from pooled_ranked
    where latest_rank = 1

),

final as (

    select
        versions_ranked.model_name,
        versions_ranked.model_version,
        versions_ranked.first_as_of_date,
        versions_ranked.last_as_of_date,
        versions_ranked.last_scored_at,
        versions_ranked.n_forecasts_scored,
        latest_pooled.target_date as accuracy_as_of_date,
        latest_pooled.window_first_target_date,
        latest_pooled.window_forecasts,
        latest_pooled.mean_abs_log_error,
        latest_pooled.naive_mean_abs_log_error,
        latest_pooled.rel_mae,
        latest_pooled.coverage_80,
        latest_pooled.coverage_gap_80,
        latest_pooled.coverage_95,
        latest_pooled.coverage_gap_95,
        coalesce(latest_pooled.n_realized_forecasts, 0) as n_realized_forecasts,
        versions_ranked.recency_rank = 1 as is_current

    from versions_ranked
    left join latest_pooled
        on
            versions_ranked.model_name = latest_pooled.model_name
            and versions_ranked.model_version = latest_pooled.model_version

)

select * from final
