with

source as (

    select * from {{ source('ml', 'drift_scores') }}

),

renamed as (

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
        reference_rows,
        current_rows,
        window_start,
        window_end,
        computed_at,
        is_drifted = 1 as is_drifted

    from source

)

select * from renamed
