{#-
    One row per forecast (ticker, as_of_date, horizon): the prediction next to what happened.
      * actual_close: close at target_date, NULL while that bar is not loaded yet;
      * as_of_close: last close the model saw (the naive "no change" forecast);
      * forecast_error = predicted - actual, naive_error = as_of_close - actual,
        pct_error = 100 * forecast_error / actual (percent);
      * abs_log_error = |ln(predicted / actual)| and naive_abs_log_error =
        |ln(as_of_close / actual)|: scale-free errors that pool across tickers (the
        realized-accuracy marts average these);
      * the 80% / 95% prediction interval (price levels, NULL when the forecast has none) and
        whether it covered the actual, bounds included (NULL until the actual is known or
        when there is no interval);
      * the as-of date's indicators, for slicing errors by market regime in dashboards;
      * is_in_sample: the model was fitted on data through model_data_end, which includes the
        target date (a backfilled forecast, `stockcast score --since`): its error is not a
        realized accuracy.
-#}
{{ config(partition_by=stockcast.month_partition('as_of_date')) }}

with

forecasts as (

    select * from {{ ref('stg_ml__predicted_prices') }}

),

daily_indicators as (

    select * from {{ ref('fct_daily_indicators') }}

),

joined as (

    select
        forecasts.ticker,
        forecasts.as_of_date,
        forecasts.horizon,
        forecasts.target_date,
        forecasts.model_name,
        forecasts.model_version,
        forecasts.mlflow_run_id,
        forecasts.scored_at,
        forecasts.model_data_end,
        forecasts.predicted_close,
        forecasts.lower_80,
        forecasts.upper_80,
        forecasts.lower_95,
        forecasts.upper_95,
        actuals.close as actual_close,
        as_of.close as as_of_close,
        as_of.sma_5,
        as_of.sma_15,
        as_of.sma_20,
        as_of.sma_50,
        as_of.ema_12,
        as_of.ema_26,
        as_of.macd,
        as_of.macd_signal,
        as_of.macd_hist,
        as_of.rsi_14

    from forecasts
    left join daily_indicators as as_of
        on
            forecasts.ticker = as_of.ticker
            and forecasts.as_of_date = as_of.trade_date
    left join daily_indicators as actuals
        on
            forecasts.ticker = actuals.ticker
            and forecasts.target_date = actuals.trade_date

),

forecast_errors as (

    select
        *,
        actual_close is not null as is_actual_known,
        predicted_close - actual_close as forecast_error,
        abs(predicted_close - actual_close) as abs_error,
        100 * (predicted_close - actual_close) / actual_close as pct_error,
        as_of_close - actual_close as naive_error,
        abs(as_of_close - actual_close) as naive_abs_error,
        abs(ln(predicted_close / actual_close)) as abs_log_error,
        abs(ln(as_of_close / actual_close)) as naive_abs_log_error,
        coalesce(target_date <= model_data_end, false) as is_in_sample,
        case
            when actual_close is null or lower_80 is null or upper_80 is null then null
            else actual_close >= lower_80 and actual_close <= upper_80
        end as is_covered_80,
        case
            when actual_close is null or lower_95 is null or upper_95 is null then null
            else actual_close >= lower_95 and actual_close <= upper_95
        end as is_covered_95

    from joined

),

final as (

    select
        ticker,
        as_of_date,
        horizon,
        target_date,
        model_name,
        model_version,
        mlflow_run_id,
        scored_at,
        predicted_close,
        lower_80,
        upper_80,
        lower_95,
        upper_95,
        actual_close,
        as_of_close,
        is_actual_known,
        forecast_error,
        abs_error,
        pct_error,
        naive_error,
        naive_abs_error,
        abs_log_error,
        naive_abs_log_error,
        model_data_end,
        is_in_sample,
        is_covered_80,
        is_covered_95,
        sma_5,
        sma_15,
        sma_20,
        sma_50,
        ema_12,
        ema_26,
        macd,
        macd_signal,
        macd_hist,
        rsi_14

    from forecast_errors

)

select * from final
