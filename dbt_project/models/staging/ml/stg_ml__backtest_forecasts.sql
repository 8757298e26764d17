{#-
    Backtest forecasts on the log-return scale. The interval bounds are renamed with a
    `_log_return` suffix: downstream, `lower_80` etc. are price levels (as in
    `ml.predicted_prices`).
-#}
with

source as (

    select * from {{ source('ml', 'backtest_forecasts') }}

),

renamed as (

    select
        backtest_run_id,
        model,
        ticker,
        as_of_date,
        horizon,
        fold,
        as_of_close,
        actual_log_return,
        predicted_log_return,
        lower_80 as lower_80_log_return,
        upper_80 as upper_80_log_return,
        lower_95 as lower_95_log_return,
        upper_95 as upper_95_log_return

    from source

)

select * from renamed
