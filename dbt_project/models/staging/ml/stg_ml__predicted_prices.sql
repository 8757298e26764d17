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
        lower_80,
        upper_80,
        lower_95,
        upper_95,
        model_name,
        model_version,
        mlflow_run_id,
        scored_at,
        model_data_end

    from source

)

select * from renamed
