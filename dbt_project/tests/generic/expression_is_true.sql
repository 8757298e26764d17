{#-
    Fails for every row where `expression` is not true (false or NULL counts as a failure
    only when it is false: NULL operands are skipped, as in dbt_utils.expression_is_true).
    Use the standard `where` config to restrict the rows that are checked.
-#}
{% test expression_is_true(model, expression) %}

    select *
    from {{ model }}
    where not ({{ expression }})

{% endtest %}
