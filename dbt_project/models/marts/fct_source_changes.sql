{#-
    One row per (ticker, trade_date) whose bar came from another source file than the
    ticker's previous bar: where a vendor or file takes over in the ticker's history, with the
    return across the change (a jump there means the two files disagree, e.g. on split
    adjustment).
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
        previous_source_file,
        source_file,
        previous_close,
        close,
        close_return,
        price_ratio,
        is_extreme_return,
        split_label,
        split_ratio,
        split_ratio_deviation,
        looks_like_split

    from price_jumps
    where is_source_change

)

select * from final
