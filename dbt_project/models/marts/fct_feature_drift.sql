{#-
    Drift of the champion's inputs and predictions per monitored scoring: one row per
    (as_of_date, column_name), from ml.drift_scores (`stockcast monitor`). Adds the as-of date's
    input drift share (drifted inputs / inputs compared: the figure the monitor's
    `drift_share` threshold is applied to) and the column's rank by how far it drifted
    (1 = the largest distance, or the smallest p-value for `ks`, among the date's columns of its
    kind and method).
-#}
with

drift_scores as (

    select * from {{ ref('stg_ml__drift_scores') }}

),

shares as (

    select
        *,
        avg(
            case
                when column_kind = 'input' and is_drifted then 1.0
                when column_kind = 'input' then 0.0
            end
        ) over (partition by as_of_date) as input_drift_share,
        sum(
            case when column_kind = 'input' and is_drifted then 1 else 0 end
        ) over (partition by as_of_date) as inputs_drifted,
        sum(
            case when column_kind = 'input' then 1 else 0 end
        ) over (partition by as_of_date) as inputs_compared,
        row_number() over (
            partition by as_of_date, column_kind, method
            order by
                case
                    when method = 'ks' then drift_score
                    else -drift_score
                end,
                column_name
        ) as drift_rank

    from drift_scores

),

final as (

    select
        as_of_date,
        column_name,
        column_kind,
        model_name,
        model_version,
        mlflow_run_id,
        monitor_run_id,
        method,
        threshold,
        drift_score,
        is_drifted,
        drift_rank,
        input_drift_share,
        inputs_drifted,
        inputs_compared,
        reference_rows,
        current_rows,
        window_start,
        window_end,
        computed_at

    from shares

)

select * from final
