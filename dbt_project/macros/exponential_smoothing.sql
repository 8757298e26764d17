{#-
    Exact exponential smoothing (EMA, Wilder averages) with window functions only: no
    recursive CTE, so it is portable to engines that cap recursion (BigQuery: 500 steps).

    An EMA with smoothing factor a (r = 1 - a) seeded at row s with value S is

        ema_t = a * sum_{k <= t} r^(t - k) * y_k,
        y_k = 0 (k < s),  y_s = S / a,  y_k = x_k (k > s).

    r^(t - k) cannot be split into r^t * r^-k over a whole history (overflow), so rows are cut
    into blocks of B rows (block b = floor(k / B)) and each term is weighted relative to the
    start of its own block (v_k) or of the next block (u_k):

        v_k = y_k * r^(b*B - k)          (at most r^-(B-1))
        u_k = y_k * r^((b+1)*B - k)      (= v_k * r^B)

    For t in block b:

        ema_t = a * r^(t - b*B) * ( running sum of v over block b up to t
                                   + total of u over block b - 1 )

    Terms older than block b - 1 weigh less than r^B; B is chosen so that B * -ln(r) >= 60,
    so the dropped tail is below e^-60 (~1e-26) of the retained part: the result equals the
    recursive definition to double precision, and r^-B <= e^61 cannot overflow a double.

    Arguments
      relation        CTE or relation to read; every column is passed through (plus three
                      helper columns prefixed with `output`).
      value           expression of the series x (may use columns of `relation`).
      alpha_numerator, alpha_denominator
                      a = alpha_numerator / alpha_denominator, computed in double precision
                      the way TA-Lib does (2 / (n + 1) for an EMA, 1 / n for Wilder).
      seed_index      row index s of the first output (0-based within the partition).
      seed_value      expression of S evaluated on row s; it may be a window function, e.g. an
                      SMA over the rows before s.
      output          name of the output column: NULL before s.
      index_column    0-based consecutive row index within the partition.
      partition_by    partition column (one series per value).
-#}
{% macro exponential_smoothing(
    relation,
    value,
    alpha_numerator,
    alpha_denominator,
    seed_index,
    seed_value,
    output,
    index_column='price_index',
    partition_by='ticker'
) -%}
    {%- set a = alpha_numerator / alpha_denominator -%}
    {%- if not (0 < a and a <= 0.5) -%}
        {{ exceptions.raise_compiler_error(
            "exponential_smoothing: alpha must be in (0, 0.5], got " ~ a) }}
    {%- endif -%}
    {#- -ln(1 - a) = sum_k a^k / k (Jinja has no log function) -#}
    {%- set ns = namespace(neg_log_r=0.0) -%}
    {%- for k in range(1, 80) -%}
        {%- set ns.neg_log_r = ns.neg_log_r + (a ** k) / k -%}
    {%- endfor -%}
    {%- set block_size = ((60.0 / ns.neg_log_r) | round(0, 'ceil')) | int -%}

    {%- set alpha -%}
        (cast({{ alpha_numerator }} as {{ stockcast.type_double() }}) / {{ alpha_denominator }})
    {%- endset -%}
    {%- set decay -%} (1 - {{ alpha }}) {%- endset -%}
    {%- set block = output ~ '__block' -%}
    {%- set term = output ~ '__term' -%}
    {%- set v = output ~ '__v' -%}
    {%- set u = output ~ '__u' -%}

    select
        *,
        case
            when {{ index_column }} >= {{ seed_index }}
                then {{ alpha }}
                    * {{ stockcast.power(decay, index_column ~ ' - ' ~ block ~ ' * ' ~ block_size) }}
                    * (
                        sum({{ v }}) over (
                            partition by {{ partition_by }}, {{ block }}
                            order by {{ index_column }}
                            rows between unbounded preceding and current row
                        )
                        + coalesce(sum({{ u }}) over (
                            partition by {{ partition_by }}
                            order by {{ block }}
                            range between 1 preceding and 1 preceding
                        ), 0)
                    )
        end as {{ output }}
    from (
        select
            *,
            {{ term }} * {{ stockcast.power(decay, block ~ ' * ' ~ block_size ~ ' - ' ~ index_column) }} as {{ v }},
            {{ term }} * {{ stockcast.power(decay, '(' ~ block ~ ' + 1) * ' ~ block_size ~ ' - ' ~ index_column) }} as {{ u }}
        from (
            select
                *,
                {{ stockcast.integer_divide(index_column, block_size) }} as {{ block }},
                case
                    when {{ index_column }} < {{ seed_index }} then 0
                    when {{ index_column }} = {{ seed_index }} then ({{ seed_value }}) / {{ alpha }}
                    else {{ value }}
                end as {{ term }}
            from {{ relation }}
        ) as {{ output }}__terms
    ) as {{ output }}__weighted
{%- endmacro %}
