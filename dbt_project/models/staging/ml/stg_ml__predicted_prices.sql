with

source as (

    select * from {{ source('ml', 'predicted_prices') }}

),

renamed as (

    select
        ticker,
        as_of_date,
        horizon,
        target_date,
        predicted_close,
        model_name,
        model_version,
        mlflow_run_id,
        scored_at

    from source

)

select * from renamed
