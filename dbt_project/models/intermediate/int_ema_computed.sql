{#-
    Exponential moving averages of close (TA-Lib EMA): k = 2 / (n + 1), first value at bar n - 1
    equal to the SMA of the first n closes, then ema_t = k * close_t + (1 - k) * ema_(t-1).
    Computed without recursion by the exponential_smoothing macro.
-#}
with

prices as (

    select * from {{ ref('int_prices_sequenced') }}

),

ema_12 as (

    {{ exponential_smoothing(
        relation='prices',
        value='close',
        alpha_numerator=2,
        alpha_denominator=13,
        seed_index=11,
        seed_value='avg(close) over (partition by ticker order by price_index rows between 11 preceding and current row)',
        output='ema_12'
    ) }}

),

ema_26 as (

    {{ exponential_smoothing(
        relation='ema_12',
        value='close',
        alpha_numerator=2,
        alpha_denominator=27,
        seed_index=25,
        seed_value='avg(close) over (partition by ticker order by price_index rows between 25 preceding and current row)',
        output='ema_26'
    ) }}

),

final as (

    select
        ticker,
        trade_date,
        price_index,
        ema_12,
        ema_26

    from ema_26

)

select * from final
