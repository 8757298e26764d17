{#-
    MACD(12, 26, 9) exactly as TA-Lib's MACD computes it (not from the standalone EMAs):
      * slow EMA(26) seeded at bar 25 with the SMA of closes 0..25;
      * fast EMA(12) ALSO seeded at bar 25 (TA-Lib aligns its start with the slow one), with the
        SMA of closes 14..25;
      * macd line = fast - slow from bar 25;
      * signal = EMA(9) of the macd line seeded at bar 33 with the mean of the line over 25..33;
      * all three outputs are NULL before bar 33, where TA-Lib starts its output.
-#}
with

prices as (

    select * from {{ ref('int_prices_sequenced') }}

),

slow_ema as (

    {{ exponential_smoothing(
        relation='prices',
        value='close',
        alpha_numerator=2,
        alpha_denominator=27,
        seed_index=25,
        seed_value='avg(close) over (partition by ticker order by price_index rows between 25 preceding and current row)',
        output='slow_ema'
    ) }}

),

fast_ema as (

    {{ exponential_smoothing(
        relation='slow_ema',
        value='close',
        alpha_numerator=2,
        alpha_denominator=13,
        seed_index=25,
        seed_value='avg(close) over (partition by ticker order by price_index rows between 11 preceding and current row)',
        output='fast_ema'
    ) }}

),

macd_line as (

    select
        ticker,
        trade_date,
        price_index,
        fast_ema - slow_ema as macd_line

    from fast_ema

),

signal_line as (

    {{ exponential_smoothing(
        relation='macd_line',
        value='macd_line',
        alpha_numerator=2,
        alpha_denominator=10,
        seed_index=33,
        seed_value='avg(macd_line) over (partition by ticker order by price_index rows between 8 preceding and current row)',
        output='signal_line'
    ) }}

),

macd_outputs as (

    select
        ticker,
        trade_date,
        price_index,
        signal_line as macd_signal,
        case when price_index >= 33 then macd_line end as macd,
        case when price_index >= 33 then macd_line - signal_line end as macd_hist

    from signal_line

),

final as (

    select
        ticker,
        trade_date,
        price_index,
        macd,
        macd_signal,
        macd_hist

    from macd_outputs

)

select * from final
