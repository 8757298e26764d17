{#-
    RSI(14) exactly as TA-Lib computes it (Wilder smoothing):
      * change_t = close_t - close_(t-1); gain = max(change, 0), loss = max(-change, 0);
      * at bar 14 the averages are the means of gains / losses over bars 1..14, then
        avg_t = (13 * avg_(t-1) + value_t) / 14, i.e. an EMA of alpha 1/14;
      * rsi = 100 * avg_gain / (avg_gain + avg_loss); NULL before bar 14;
      * 0 only when both averages are exactly 0, i.e. no close has moved yet (checked against
        talib: its zero test is exact, even averages of 1e-310 give 100).
    During a run of unchanged closes both averages decay by the same factor, so the RSI stays
    at its value from the last move. After two blocks (about 1,600 bars) of unchanged closes the
    smoothing macro's truncated sums reach exactly 0 while TA-Lib's are still positive, so the
    RSI of the last bar with non-zero averages is carried forward instead.
-#}
with

prices as (

    select * from {{ ref('int_prices_sequenced') }}

),

price_changes as (

    select
        ticker,
        trade_date,
        price_index,
        close - lag(close) over (
            partition by ticker
            order by price_index
        ) as close_change

    from prices

),

gains_and_losses as (

    select
        ticker,
        trade_date,
        price_index,
        case when close_change > 0 then close_change else 0 end as gain,
        case when close_change < 0 then -close_change else 0 end as loss

    from price_changes

),

average_gain as (

    {{ exponential_smoothing(
        relation='gains_and_losses',
        value='gain',
        alpha_numerator=1,
        alpha_denominator=14,
        seed_index=14,
        seed_value='avg(gain) over (partition by ticker order by price_index rows between 13 preceding and current row)',
        output='average_gain'
    ) }}

),

average_loss as (

    {{ exponential_smoothing(
        relation='average_gain',
        value='loss',
        alpha_numerator=1,
        alpha_denominator=14,
        seed_index=14,
        seed_value='avg(loss) over (partition by ticker order by price_index rows between 13 preceding and current row)',
        output='average_loss'
    ) }}

),

rsi_from_averages as (

    select
        ticker,
        trade_date,
        price_index,
        average_gain,
        average_loss,
        case
            when average_gain + average_loss > 0
                then 100 * average_gain / (average_gain + average_loss)
        end as rsi_from_averages

    from average_loss

),

final as (

    select
        ticker,
        trade_date,
        price_index,
        average_gain,
        average_loss,
        case
            when price_index >= 14
                then coalesce(
                    rsi_from_averages,
                    last_value(rsi_from_averages ignore nulls) over (
                        partition by ticker
                        order by price_index
                        rows between unbounded preceding and current row
                    ),
                    0
                )
        end as rsi_14

    from rsi_from_averages

)

select * from final
