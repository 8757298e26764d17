with

source as (

    select * from {{ source('ml', 'backtest_metrics') }}

),

renamed as (

    select
        backtest_run_id,
        model,
        ticker,
        horizon,
        n_forecasts,
        mae,
        rmse,
        mape,
        rel_mae,
        mase,
        directional_accuracy,
        dm_stat,
        dm_pvalue,
        coverage_80,
        width_80,
        winkler_80,
        coverage_95,
        width_95,
        winkler_95,
        pinball,
        n_folds,
        first_as_of,
        last_as_of,
        created_at

    from source

)

select * from renamed
