{#-
    Fails (or warns, with `severity: warn`) for every row where `condition` is true: the
    data-quality marts use it with a name that says what is wrong, e.g.
    `warn_gaps_over_5_sessions` with condition `sessions_missed > 5`, so dbt's summary reads
    "Warning in test warn_gaps_over_5_sessions ... Got 2 results".
-#}
{% test no_rows_where(model, condition) %}

    select *
    from {{ model }}
    where {{ condition }}

{% endtest %}
