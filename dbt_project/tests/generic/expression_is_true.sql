{#-
    Fails for every row where `expression` is false. Rows where it is NULL are not counted,
    as in dbt_utils.expression_is_true. Use the standard `where` config to restrict the rows
    that are checked.
-#}
{% test expression_is_true(model, expression) %}

    select *
    from {{ model }}
    where not ({{ expression }})

{% endtest %}
