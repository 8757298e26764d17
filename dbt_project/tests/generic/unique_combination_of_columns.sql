{#-
    Fails for every combination of `combination_of_columns` that occurs more than once
    (a project version of dbt_utils.unique_combination_of_columns: hub packages cannot be
    installed here).
-#}
{% test unique_combination_of_columns(model, combination_of_columns) %}

    {%- set columns_csv = combination_of_columns | join(', ') %}

    select
        {{ columns_csv }},
        count(*) as n_records
    from {{ model }}
    group by {{ columns_csv }}
    having count(*) > 1

{% endtest %}
