-- RSI(14) exactly as TA-Lib computes it (Wilder smoothing):
--   * change_t = close_t - close_(t-1); gain = max(change, 0), loss = max(-change, 0);
--   * at bar 14 the averages are the means of gains / losses over bars 1..14, then
--     avg_t = (13 * avg_(t-1) + value_t) / 14 (an EMA with alpha = 1/14);
--   * rsi = 100 * avg_gain / (avg_gain + avg_loss), and 0 when avg_gain + avg_loss is within
--     1e-8 of zero (TA-Lib's TA_IS_ZERO), e.g. after long runs of flat bars;
--   * NULL before bar 14.
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

final as (

    select
        ticker,
        trade_date,
        price_index,
        average_gain,
        average_loss,
        case
            when price_index < 14 then null
            when abs(average_gain + average_loss) < 1e-8 then 0
            else 100 * average_gain / (average_gain + average_loss)
        end as rsi_14

    from average_loss

)

select * from final
