{#-
    Override of dbt's `get_unit_test_sql` (namespace `dbt`; the root project's version wins).

    dbt compares unit-test results with exact equality, but the expected indicator values are
    computed by TA-Lib with a different (recursive) floating-point evaluation order, so they
    agree with the SQL only to ~1e-13. Floating-point columns (double / float) are therefore
    rounded to `var('unit_test_float_decimals', 9)` decimals on both the actual and the expected
    side before the comparison. Every other type is compared exactly, as in dbt's default.
-#}
{% macro default__get_unit_test_sql(main_sql, expected_fixture_sql, expected_column_names) -%}
{%- set decimals = var('unit_test_float_decimals', 9) -%}
{%- set float_columns = [] -%}
{%- for column in get_columns_in_query_with_types(main_sql) -%}
    {%- if column.is_float() -%}
        {%- do float_columns.append(adapter.quote(column.name) | lower) -%}
        {%- do float_columns.append(column.name | lower) -%}
    {%- endif -%}
{%- endfor -%}
{%- set compared = [] -%}
{%- for name in expected_column_names -%}
    {%- if (name | lower) in float_columns -%}
        {%- do compared.append('round(' ~ name ~ ', ' ~ decimals ~ ') as ' ~ name) -%}
    {%- else -%}
        {%- do compared.append(name) -%}
    {%- endif -%}
{%- endfor %}
-- Build actual result given inputs
with dbt_internal_unit_test_actual as (
  select
    {{ compared | join(', ') }}, {{ dbt.string_literal("actual") }} as {{ adapter.quote("actual_or_expected") }}
  from (
    {{ main_sql }}
  ) _dbt_internal_unit_test_actual
),
-- Build expected result
dbt_internal_unit_test_expected as (
  select
    {{ compared | join(', ') }}, {{ dbt.string_literal("expected") }} as {{ adapter.quote("actual_or_expected") }}
  from (
    {{ expected_fixture_sql }}
  ) _dbt_internal_unit_test_expected
)
-- Union actual and expected results
select * from dbt_internal_unit_test_actual
union all
select * from dbt_internal_unit_test_expected
{%- endmacro %}


{#- Columns (name and type) of a query, via a zero-row temporary relation. -#}
{% macro get_columns_in_query_with_types(sql) -%}
    {%- set probe = make_temp_relation(this.incorporate(type='table'), '__float_probe') -%}
    {%- do run_query(get_create_table_as_sql(True, probe, get_empty_subquery_sql(sql))) -%}
    {%- set columns = adapter.get_columns_in_relation(probe) -%}
    {%- do adapter.drop_relation(probe) -%}
    {{ return(columns) }}
{%- endmacro %}
