{#-
    One row per (ticker, trade_date) whose close-to-close return beats
    var('extreme_return_threshold') in absolute value, with the nearest common split ratio
    when the move is within var('split_ratio_tolerance') of one.
-#}
with

price_jumps as (

    select * from {{ ref('int_price_jumps_matched_to_splits') }}

),

final as (

    select
        ticker,
        trade_date,
        previous_trade_date,
        previous_close,
        close,
        close_return,
        price_ratio,
        split_label,
        split_ratio,
        split_ratio_deviation,
        looks_like_split,
        is_source_change,
        previous_source_file,
        source_file

    from price_jumps
    where is_extreme_return

)

select * from final
