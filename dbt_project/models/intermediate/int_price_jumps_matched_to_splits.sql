{#-
    One row per (ticker, trade_date) for the bars worth a second look: an extreme
    close-to-close return (|return| > var('extreme_return_threshold')) or a change of source
    file. Each is matched to the nearest common split ratio (var('split_ratios'), "N:M" = N
    new shares for M old, so the price divides by N/M) by the relative deviation of
    previous_close / close from N/M; the match is kept within var('split_ratio_tolerance'):
    "looks like an unadjusted 4:1 split".
-#}
with

price_changes as (

    select * from {{ ref('int_price_changes_computed') }}

),

split_ratios as (

    {% for label in var('split_ratios') -%}
        {%- set shares = label.split(':') %}
        select
            '{{ label }}' as split_label,
            cast({{ shares[0] }} as {{ stockcast.type_double() }})
            / {{ shares[1] }} as split_ratio
        {%- if not loop.last %}
            union all
        {%- endif %}
    {% endfor %}

),

price_jumps as (

    select *
    from price_changes
    where
        previous_close is not null
        and (
            abs(close_return) > {{ var('extreme_return_threshold') }}
            or is_source_change
        )

),

ratios_compared as (

    select
        price_jumps.ticker,
        price_jumps.trade_date,
        split_ratios.split_label,
        split_ratios.split_ratio,
        abs(price_jumps.price_ratio / split_ratios.split_ratio - 1) as split_ratio_deviation,
        row_number() over (
            partition by price_jumps.ticker, price_jumps.trade_date
            order by abs(price_jumps.price_ratio / split_ratios.split_ratio - 1)
        ) as deviation_rank

    from price_jumps
    cross join split_ratios

),

nearest_ratios as (

    select *
    from ratios_compared
    where
        deviation_rank = 1
        and split_ratio_deviation <= {{ var('split_ratio_tolerance') }}

),

final as (

    select
        price_jumps.ticker,
        price_jumps.trade_date,
        price_jumps.previous_trade_date,
        price_jumps.previous_close,
        price_jumps.close,
        price_jumps.close_return,
        price_jumps.price_ratio,
        price_jumps.previous_source_file,
        price_jumps.source_file,
        price_jumps.is_source_change,
        abs(price_jumps.close_return) > {{ var('extreme_return_threshold') }}
            as is_extreme_return,
        nearest_ratios.split_label,
        nearest_ratios.split_ratio,
        nearest_ratios.split_ratio_deviation,
        nearest_ratios.split_label is not null as looks_like_split

    from price_jumps
    left join nearest_ratios
        on
            price_jumps.ticker = nearest_ratios.ticker
            and price_jumps.trade_date = nearest_ratios.trade_date

)

select * from final
