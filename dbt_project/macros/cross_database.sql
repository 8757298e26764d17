{#-
    Engine differences live here and only here (adapter.dispatch): `default__` is standard SQL,
    `duckdb__` and `bigquery__` override it where the engines differ.
-#}

{#- A 64-bit IEEE float type: indicators must be computed in double precision to match
    TA-Lib. (`dbt.type_float()` is a 32-bit REAL on DuckDB, so it cannot be used.) -#}
{% macro type_double() -%}
    {{ return(adapter.dispatch('type_double', 'stockcast')()) }}
{%- endmacro %}

{% macro default__type_double() -%}
    double precision
{%- endmacro %}

{% macro duckdb__type_double() -%}
    double
{%- endmacro %}

{% macro bigquery__type_double() -%}
    float64
{%- endmacro %}


{#- x raised to the power y, both doubles. -#}
{% macro power(x, y) -%}
    {{ return(adapter.dispatch('power', 'stockcast')(x, y)) }}
{%- endmacro %}

{% macro default__power(x, y) -%}
    power({{ x }}, {{ y }})
{%- endmacro %}


{#- Integer quotient of two non-negative integers, as a 64-bit integer. -#}
{% macro integer_divide(numerator, denominator) -%}
    {{ return(adapter.dispatch('integer_divide', 'stockcast')(numerator, denominator)) }}
{%- endmacro %}

{% macro default__integer_divide(numerator, denominator) -%}
    cast(floor({{ numerator }} / {{ denominator }}) as {{ dbt.type_bigint() }})
{%- endmacro %}

{% macro duckdb__integer_divide(numerator, denominator) -%}
    ({{ numerator }} // {{ denominator }})
{%- endmacro %}

{#- BigQuery's `/` always returns FLOAT64; DIV is the exact INT64 quotient. -#}
{% macro bigquery__integer_divide(numerator, denominator) -%}
    div({{ numerator }}, {{ denominator }})
{%- endmacro %}


{#- Table partitioning by month of a DATE column (the `partition_by` model config): BigQuery
    only, none elsewhere (dbt-duckdb reads `partition_by` as a list of columns). -#}
{% macro month_partition(column) -%}
    {{ return(adapter.dispatch('month_partition', 'stockcast')(column)) }}
{%- endmacro %}

{% macro default__month_partition(column) -%}
    {{ return(none) }}
{%- endmacro %}

{% macro bigquery__month_partition(column) -%}
    {{ return({'field': column, 'data_type': 'date', 'granularity': 'month'}) }}
{%- endmacro %}
