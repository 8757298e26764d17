{#-
    Custom schemas land exactly as named (`staging`, `intermediate`, `marts`): the Python side
    reads `marts.fct_daily_indicators`, so no `<target_schema>_` prefix is added. Models without
    a custom schema go to the target schema.
-#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema }}
    {%- else -%}
        {{ custom_schema_name | trim }}
    {%- endif -%}
{%- endmacro %}
