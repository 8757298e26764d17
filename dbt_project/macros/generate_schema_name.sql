{#-
    Where each logical schema (`raw`, `ml`, `staging`, `intermediate`, `marts`) lives on the
    target's engine. The rule is shared with the Python side (ml/config.py), so keep both equal:
      * DuckDB: the plain name (`marts.fct_daily_indicators`);
      * BigQuery: `<target.schema>_<name>`, target.schema being the profile's `dataset`
        (default `stockcast`): `stockcast_raw`, `stockcast_marts`, ... so that a dev and a prod
        target in one GCP project never share a dataset.
    Models without a custom schema go to the target schema on both engines. Sources use
    `physical_schema_name` too (see _raw__sources.yml, _ml__sources.yml).
-#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema }}
    {%- else -%}
        {{ stockcast.physical_schema_name(custom_schema_name | trim) }}
    {%- endif -%}
{%- endmacro %}


{#- The physical schema (DuckDB) or dataset (BigQuery) of a logical schema name. -#}
{% macro physical_schema_name(name) -%}
    {{ return(adapter.dispatch('physical_schema_name', 'stockcast')(name)) }}
{%- endmacro %}

{% macro default__physical_schema_name(name) -%}
    {{ return(name) }}
{%- endmacro %}

{% macro bigquery__physical_schema_name(name) -%}
    {{ return(target.schema ~ '_' ~ name) }}
{%- endmacro %}
