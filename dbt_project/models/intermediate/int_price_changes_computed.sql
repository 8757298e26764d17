{#-
    One row per (ticker, trade_date): the bar next to the ticker's previous bar (the one
    before it in trade_date order, whatever the calendar says): its date, close and source
    file, the close-to-close return and the NYSE sessions missed in between. The
    data-quality marts filter this model (gaps, extreme returns, source changes).
-#}
with

prices as (

    select * from {{ ref('int_prices_sequenced') }}

),

calendar_days as (

    select * from {{ ref('int_calendar_days_numbered') }}

),

prices_lagged as (

    select
        ticker,
        trade_date,
        price_index,
        close,
        source_file,
        lag(trade_date) over (
            partition by ticker
            order by price_index
        ) as previous_trade_date,
        lag(close) over (
            partition by ticker
            order by price_index
        ) as previous_close,
        lag(source_file) over (
            partition by ticker
            order by price_index
        ) as previous_source_file

    from prices

),

final as (

    select
        prices_lagged.ticker,
        prices_lagged.trade_date,
        prices_lagged.price_index,
        prices_lagged.close,
        prices_lagged.source_file,
        prices_lagged.previous_trade_date,
        prices_lagged.previous_close,
        prices_lagged.previous_source_file,
        this_day.is_session,
        previous_day.session_number as previous_session_number,
        prices_lagged.close / prices_lagged.previous_close - 1 as close_return,
        prices_lagged.previous_close / prices_lagged.close as price_ratio,
        this_day.session_number
        - case when this_day.is_session then 1 else 0 end
        - previous_day.session_number as sessions_missed,
        coalesce(
            prices_lagged.source_file != prices_lagged.previous_source_file, false
        ) as is_source_change

    from prices_lagged
    left join calendar_days as this_day
        on prices_lagged.trade_date = this_day.calendar_date
    left join calendar_days as previous_day
        on prices_lagged.previous_trade_date = previous_day.calendar_date

)

select * from final
