{#-
    The technical indicators of fct_daily_indicators (TA-Lib SMA 5/15/20/50, EMA 12/26,
    MACD(12, 26, 9), RSI(14)) in few passes over the bars: one macro emits a chain of CTEs,
    used by the mart (full build and incremental runs) and by the per-indicator views.

    Exact exponential smoothing without recursion (BigQuery caps recursion at 500 steps). An
    EMA with smoothing factor a (r = 1 - a) seeded at bar s with value S is

        ema_t = a * sum_{k <= t} r^(t - k) * y_k,   y_k = 0 (k < s), y_s = S / a, y_k = x_k (k > s).

    r^(t - k) cannot be split into r^t * r^-k over a whole history (overflow), so bars are cut
    into blocks of B bars (block b = floor(k / B)) and each term is weighted relative to the
    start of its block: v_k = y_k * r^(b*B - k) (at most r^-(B-1)). For t in block b,

        ema_t = a * r^(t - b*B) * ( running sum of v over block b up to t
                                   + r^B * total of v over block b - 1 ).

    Terms older than block b - 1 weigh less than r^B: B is chosen so that B * -ln(r) >= 60 for
    every smoothing factor used here (the dropped tail is below e^-60 ~ 1e-26 of the result, so
    it equals the recursive definition to double precision), and r^-B <= e^182 for the largest
    factor (0.2) cannot overflow a double. One block size for every series lets all of them
    share one window (partition by ticker and block): 2 window passes and a few small aggregates
    in all, instead of 3 windows per EMA.

    Seeds without windows: TA-Lib seeds an EMA at bar s with the mean of the n values ending at
    s, i.e. y_s = mean / a: each of those n values is a term x_j / (n * a) weighted as if it
    were at bar s. The per-bar terms need no window at all.

    MACD's fast EMA(12) is seeded at bar 25 (mean of closes 14..25), EMA(12) at bar 11; after
    bar 25 both follow the same recursion, so fast_t = ema_12_t + (fast_25 - ema_12_25) *
    r^(t - 25): one per-ticker constant instead of a third series.

    Incremental runs (state): the input may start in the middle of a ticker's history, with
    `state_index` = the price_index of the last bar kept from the previous build and the
    indicator values stored for that bar (state_*). Each series is then seeded at that bar with
    its stored value (EMA_t = a * x_t + r * EMA_(t-1) needs nothing older), which continues the
    recursion exactly. The input must then hold the 49 bars up to and including the state bar
    (SMA(50) and the first price change need them); the caller keeps rows after it.

    Arguments
      prices      relation or CTE: ticker, trade_date, close, index_offset (price_index of the
                  ticker's first input row) and, with `stateful`, the state_* columns (NULL
                  for a ticker computed from its first bar).
      stateful    false: every ticker starts at its first bar (no state columns: narrower
                  rows through the windows).
      prefix      prefix of the emitted CTE names; the last one is `<prefix>_values`.
      carry       more columns of `prices` to pass through to `<prefix>_values` (the mart's
                  full build carries the bar's OHLCV: cheaper than joining 1M rows back).
-#}

{#- Smoothing factors (numerator, denominator) of the series; block size from the smallest. -#}
{% macro indicator_block_size() -%}
    {%- set ns = namespace(block=0) -%}
    {%- for factor in [(2, 13), (2, 27), (1, 14), (2, 10)] -%}
        {%- set a = factor[0] / factor[1] -%}
        {#- -ln(1 - a) = sum_k a^k / k (Jinja has no log function) -#}
        {%- set inner = namespace(neg_log_r=0.0) -%}
        {%- for k in range(1, 80) -%}
            {%- set inner.neg_log_r = inner.neg_log_r + (a ** k) / k -%}
        {%- endfor -%}
        {%- set block = ((60.0 / inner.neg_log_r) | round(0, 'ceil')) | int -%}
        {%- if block > ns.block -%}{%- set ns.block = block -%}{%- endif -%}
    {%- endfor -%}
    {{ return(ns.block) }}
{%- endmacro %}


{#- a = numerator / denominator in double precision (as TA-Lib computes it). -#}
{% macro _smoothing_alpha(numerator, denominator) -%}
    (cast({{ numerator }} as {{ stockcast.type_double() }}) / {{ denominator }})
{%- endmacro %}

{% macro _smoothing_decay(numerator, denominator) -%}
    (1 - {{ stockcast._smoothing_alpha(numerator, denominator) }})
{%- endmacro %}


{#- The term v_k of one series on one bar: `value` from bar seed_index + 1 on, the seed (mean
    of the `seed_window` values ending at seed_index, or the stored state) at the seed bar. -#}
{% macro _smoothing_term(
    value, numerator, denominator, seed_index, seed_window, state, stateful, block_size
) -%}
    {%- set a = stockcast._smoothing_alpha(numerator, denominator) -%}
    {%- set r = stockcast._smoothing_decay(numerator, denominator) -%}
    {%- set offset_in_block = 'mod(price_index, ' ~ block_size ~ ')' -%}
    case
        {%- if stateful %}
        when state_index is not null
            then case
                when price_index > state_index
                    then {{ value }} * {{ stockcast.power(r, '-' ~ offset_in_block) }}
                when price_index = state_index
                    then {{ state }} / {{ a }} * {{ stockcast.power(r, '-' ~ offset_in_block) }}
                else 0
            end
        {%- endif %}
        when price_index > {{ seed_index }}
            then {{ value }} * {{ stockcast.power(r, '-' ~ offset_in_block) }}
        when price_index > {{ seed_index - seed_window }}
            then {{ value }} / ({{ seed_window }} * {{ a }})
                * {{ stockcast.power(r, 'block_number * ' ~ block_size ~ ' - ' ~ seed_index) }}
        else 0
    end
{%- endmacro %}


{#- The smoothed value on one bar from the in-block running sum and the previous block's total
    (both already columns: <name>__running, <name>__previous_block). -#}
{% macro _smoothing_output(name, numerator, denominator, seed_index, block_size) -%}
    {%- set a = stockcast._smoothing_alpha(numerator, denominator) -%}
    {%- set r = stockcast._smoothing_decay(numerator, denominator) -%}
    case
        when price_index >= {{ seed_index }}
            then {{ a }} * {{ stockcast.power(r, 'mod(price_index, ' ~ block_size ~ ')') }}
                * (
                    {{ name }}__running
                    + {{ stockcast.power(r, block_size) }} * coalesce({{ name }}__previous_block, 0)
                )
    end
{%- endmacro %}


{% macro _in_block_running_sum(relation, column) -%}
    sum({{ relation }}.{{ column }}) over (
        partition by {{ relation }}.ticker, {{ relation }}.block_number
        order by {{ relation }}.price_index
        rows between unbounded preceding and current row
    )
{%- endmacro %}


{#- The last non-NULL `value` of a group, in `order_by` order. -#}
{% macro last_non_null(value, order_by) -%}
    {{ return(adapter.dispatch('last_non_null', 'stockcast')(value, order_by)) }}
{%- endmacro %}

{% macro default__last_non_null(value, order_by) -%}
    array_agg({{ value }} ignore nulls order by {{ order_by }} desc)[safe_offset(0)]
{%- endmacro %}

{% macro duckdb__last_non_null(value, order_by) -%}
    arg_max({{ value }}, {{ order_by }}) filter (where {{ value }} is not null)
{%- endmacro %}


{#- The MACD signal without a window pass of its own. For Y an EMA of closes (factor a_y,
    r_y = 1 - a_y) and X the EMA(9) of closes (a = 0.2, r = 0.8, any seed), the sum
    sum_{k=s+1..t} r^(t-k) Y_k = alpha_y Y_t + beta_y X_t + c r^(t-s) with
    alpha_y = r_y / (r_y - r) and beta_y = -a_y r / (a (r_y - r)) (check: both sides follow
    D_t = r D_(t-1) + Y_t). With Y = MACD's fast EMA minus the slow EMA(26), the signal seeded
    at bar s with S is therefore

        signal_t = L_t + (S - L_s) r^(t - s),   L_t = a (alpha_f F_t - alpha_e E_t + (beta_f - beta_e) X_t),

    per-bar values plus one per-ticker constant. L is a difference of terms a few times the
    price level, so it loses about 2 decimal digits to cancellation: 1e-15 of the price level,
    far inside the parity tolerance. -#}
{% macro _signal_coefficient(numerator, denominator, which) -%}
    {%- set a_y = stockcast._smoothing_alpha(numerator, denominator) -%}
    {%- set r_y = stockcast._smoothing_decay(numerator, denominator) -%}
    {%- set a = stockcast._smoothing_alpha(2, 10) -%}
    {%- set r = stockcast._smoothing_decay(2, 10) -%}
    {%- if which == 'alpha' -%}
        ({{ r_y }} / ({{ r_y }} - {{ r }}))
    {%- else -%}
        (-{{ a_y }} * {{ r }} / ({{ a }} * ({{ r_y }} - {{ r }})))
    {%- endif -%}
{%- endmacro %}


{% macro daily_indicator_ctes(prices, stateful=false, prefix='indicator', carry=[]) -%}
    {%- set block_size = stockcast.indicator_block_size() -%}
    {#- name: (value, numerator, denominator, seed index, seed window, state column) -#}
    {%- set series = {
        'ema_12': ('close', 2, 13, 11, 12, 'state_ema_12'),
        'ema_26': ('close', 2, 27, 25, 26, 'state_ema_26'),
        'average_gain': ('gain', 1, 14, 14, 14, 'state_average_gain'),
        'average_loss': ('loss', 1, 14, 14, 14, 'state_average_loss'),
        'close_ema_9': ('close', 2, 10, 0, 1, 'close'),
    } -%}
    {%- set state_columns = [
        'state_index', 'state_ema_12', 'state_ema_26', 'state_macd_fast_ema',
        'state_average_gain', 'state_average_loss', 'state_macd_signal', 'state_rsi_14',
    ] if stateful else [] -%}
    {%- set passthrough = state_columns + carry -%}
    {%- set fast_a = stockcast._smoothing_alpha(2, 13) -%}
    {%- set fast_r = stockcast._smoothing_decay(2, 13) -%}
    {%- set signal_a = stockcast._smoothing_alpha(2, 10) -%}
    {%- set signal_r = stockcast._smoothing_decay(2, 10) -%}

{{ prefix }}_sequenced as (

    select
        ticker,
        trade_date,
        close,
        {%- for column in passthrough %}
        {{ column }},
        {%- endfor %}
        index_offset + row_number() over bars - 1 as price_index,
        {%- for n in [5, 15, 20, 50] %}
        case
            when index_offset + row_number() over bars > {{ n - 1 }}
                then avg(close) over (
                    partition by ticker
                    order by trade_date
                    rows between {{ n - 1 }} preceding and current row
                )
        end as sma_{{ n }},
        {%- endfor %}
        close - lag(close) over bars as close_change

    from {{ prices }}
    window bars as (partition by ticker order by trade_date)

),

{{ prefix }}_terms as (

    select
        *,
        {{ stockcast.integer_divide('price_index', block_size) }} as block_number,
        case when close_change > 0 then close_change else 0 end as gain,
        case when close_change < 0 then -close_change else 0 end as loss

    from {{ prefix }}_sequenced
    {%- if stateful %}
    {#- A resumed ticker's bars before its state bar are context for the SMAs only: every
        smoothed series restarts from the state, so they carry no terms. #}
    where state_index is null or price_index >= state_index
    {%- endif %}

),

{{ prefix }}_weighted as (

    select
        *,
        {%- for name, s in series.items() %}
        {{ stockcast._smoothing_term(s[0], s[1], s[2], s[3], s[4], s[5], stateful, block_size) }} as {{ name }}__v
        {{- ',' if not loop.last }}
        {%- endfor %}

    from {{ prefix }}_terms

),

{{ prefix }}_block_totals as (

    select
        ticker,
        block_number + 1 as block_number,
        {%- for name in series %}
        sum({{ name }}__v) as {{ name }}__previous_block
        {{- ',' if not loop.last }}
        {%- endfor %}

    from {{ prefix }}_weighted
    group by ticker, block_number

),

{#- MACD's fast EMA minus ema_12 at bar 25 (first build of a ticker): a linear combination
    of closes 0..25 (fast: mean of 14..25; ema_12: mean of 0..11 carried by r^14, then
    a * r^(25 - k) for k = 12..25). -#}
{{ prefix }}_fast_offsets as (

    select
        ticker,
        sum(
            close * (
                case when price_index >= 14 then 1.0 / 12 else 0 end
                - case
                    when price_index > 11
                        then {{ fast_a }} * {{ stockcast.power(fast_r, '25 - price_index') }}
                    else {{ stockcast.power(fast_r, 14) }} / 12
                end
            )
        ) as fast_minus_ema_12

    from {{ prefix }}_terms
    where {{ 'state_index is null and' if stateful }} price_index <= 25
    group by ticker
    having count(*) = 26

),

{#- The window reads the weighted bars alone: joined first to the block totals, DuckDB
    estimates the join at ~100 times its rows and sizes the window's partitions for that
    (twice the time). The totals and MACD offsets are joined after it. -#}
{{ prefix }}_smoothed as (

    select
        ticker,
        trade_date,
        close,
        price_index,
        block_number,
        {%- for column in passthrough %}
        {{ column }},
        {%- endfor %}
        sma_5,
        sma_15,
        sma_20,
        sma_50,
        {%- for name in series %}
        {{ stockcast._in_block_running_sum('weighted', name ~ '__v') }} as {{ name }}__running
        {{- ',' if not loop.last }}
        {%- endfor %}

    from {{ prefix }}_weighted as weighted

),

{{ prefix }}_averaged as (

    select
        smoothed.ticker,
        smoothed.trade_date,
        smoothed.close,
        smoothed.price_index,
        smoothed.block_number,
        {%- for column in passthrough %}
        smoothed.{{ column }},
        {%- endfor %}
        smoothed.sma_5,
        smoothed.sma_15,
        smoothed.sma_20,
        smoothed.sma_50,
        {%- for name, s in series.items() %}
        {{ stockcast._smoothing_output(name, s[1], s[2], s[3], block_size) }} as {{ name }},
        {%- endfor %}
        {%- if stateful %}
        case
            when smoothed.state_index is not null
                then smoothed.state_macd_fast_ema - smoothed.state_ema_12
            else fast_offsets.fast_minus_ema_12
        end as fast_minus_ema_12,
        coalesce(smoothed.state_index, 25) as fast_offset_index
        {%- else %}
        fast_offsets.fast_minus_ema_12,
        25 as fast_offset_index
        {%- endif %}

    from {{ prefix }}_smoothed as smoothed
    left join {{ prefix }}_block_totals as totals
        on
            smoothed.ticker = totals.ticker
            and smoothed.block_number = totals.block_number
    left join {{ prefix }}_fast_offsets as fast_offsets
        on smoothed.ticker = fast_offsets.ticker

),

{{ prefix }}_macd_lines as (

    select
        *,
        case
            when price_index >= 25
                then ema_12
                + fast_minus_ema_12
                * {{ stockcast.power(fast_r, 'price_index - fast_offset_index') }}
        end as macd_fast_ema,
        case
            when price_index >= 25
                then ema_12
                + fast_minus_ema_12
                * {{ stockcast.power(fast_r, 'price_index - fast_offset_index') }}
                - ema_26
        end as macd_line,
        case
            {%- if stateful %}
            when state_index = price_index then state_rsi_14
            {%- endif %}
            when average_gain + average_loss > 0
                then 100 * average_gain / (average_gain + average_loss)
        end as rsi_from_averages

    from {{ prefix }}_averaged

),

{{ prefix }}_signal_lines as (

    select
        *,
        {{ signal_a }} * (
            {{ stockcast._signal_coefficient(2, 13, 'alpha') }} * macd_fast_ema
            - {{ stockcast._signal_coefficient(2, 27, 'alpha') }} * ema_26
            + (
                {{ stockcast._signal_coefficient(2, 13, 'beta') }}
                - {{ stockcast._signal_coefficient(2, 27, 'beta') }}
            ) * close_ema_9
        ) as signal_particular

    from {{ prefix }}_macd_lines

),

{#- Per ticker, where the signal starts (bar 33, or the state bar) and the constant K of its
    decaying term: the seed (mean of the macd line over bars 25..33, or the stored signal)
    minus the particular part on that bar. -#}
{{ prefix }}_signal_seeds as (

    select
        ticker,
        {%- if stateful %}
        coalesce(max(state_index), 33) as signal_seed_index,
        coalesce(
            max(case when price_index = state_index then state_macd_signal end),
            sum(case when state_index is null and price_index >= 25 then macd_line end) / 9
        )
        - max(
            case when price_index = coalesce(state_index, 33) then signal_particular end
        ) as signal_seed_offset
        {%- else %}
        33 as signal_seed_index,
        sum(case when price_index >= 25 then macd_line end) / 9
        - max(case when price_index = 33 then signal_particular end) as signal_seed_offset
        {%- endif %}

    from {{ prefix }}_signal_lines
    where
        {%- if stateful %}
        price_index = state_index or (state_index is null and price_index <= 33)
        {%- else %}
        price_index <= 33
        {%- endif %}
    group by ticker
    having
        {%- if stateful %}
        max(state_index) is not null or
        {%- endif %}
        count(case when price_index >= 25 then 1 end) = 9

),

{#- Per block, the RSI of the block's last bar with non-zero averages (during a flat run both
    Wilder averages decay alike, so TA-Lib's RSI keeps its value; after two blocks of flat
    bars the truncated sums are exactly 0, and that RSI is carried forward from earlier
    blocks). -#}
{{ prefix }}_block_rsi as (

    select
        ticker,
        block_number + 1 as block_number,
        {{ stockcast.last_non_null('rsi_from_averages', 'price_index') }} as block_rsi_14

    from {{ prefix }}_macd_lines
    group by ticker, block_number

),

{{ prefix }}_rsi_carried as (

    select
        ticker,
        block_number,
        last_value(block_rsi_14 ignore nulls) over (
            partition by ticker
            order by block_number
            rows between unbounded preceding and current row
        ) as carried_rsi_14

    from {{ prefix }}_block_rsi

),

{{ prefix }}_signal_smoothed as (

    select
        lines.*,
        case
            when lines.price_index >= seeds.signal_seed_index
                then lines.signal_particular
                + seeds.signal_seed_offset
                * {{ stockcast.power(signal_r, 'lines.price_index - seeds.signal_seed_index') }}
        end as macd_signal,
        carried.carried_rsi_14

    from {{ prefix }}_signal_lines as lines
    left join {{ prefix }}_signal_seeds as seeds
        on lines.ticker = seeds.ticker
    left join {{ prefix }}_rsi_carried as carried
        on
            lines.ticker = carried.ticker
            and lines.block_number = carried.block_number

),

{{ prefix }}_values as (

    select
        ticker,
        trade_date,
        close,
        price_index,
        {{ 'state_index' if stateful else 'cast(null as ' ~ dbt.type_bigint() ~ ') as state_index' }},
        sma_5,
        sma_15,
        sma_20,
        sma_50,
        ema_12,
        ema_26,
        case when price_index >= 33 then macd_line end as macd,
        case when price_index >= 33 then macd_signal end as macd_signal,
        case when price_index >= 33 then macd_line - macd_signal end as macd_hist,
        case
            when price_index >= 14
                then coalesce(rsi_from_averages, carried_rsi_14, {{ 'state_rsi_14, ' if stateful }}0)
        end as rsi_14,
        macd_fast_ema,
        average_gain,
        average_loss
        {%- for column in carry %},
        {{ column }}
        {%- endfor %}

    from {{ prefix }}_signal_smoothed

)
{%- endmacro %}
