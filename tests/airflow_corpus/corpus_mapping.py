"""Dynamic task mapping: expand over a literal, over an upstream's output, partial, expand_kwargs, classic operators."""

from datetime import datetime

from airflow.decorators import dag, task
from airflow.operators.bash import BashOperator


@dag(schedule=None, start_date=datetime(2024, 1, 1), catchup=False, tags=["corpus"])
def corpus_mapping():
    @task
    def add_one(x: int):
        return x + 1

    @task
    def sum_it(values):
        total = sum(values)
        print(f"Total was {total}")
        return total

    added_values = add_one.expand(x=[1, 2, 3])
    sum_it(added_values)

    @task
    def make_list():
        return [10, 20]

    @task
    def multiply(x: int, by: int):
        return x * by

    sum_it.override(task_id="sum_products")(multiply.partial(by=3).expand(x=make_list()))

    @task
    def pairs():
        return [{"a": 1, "b": 2}, {"a": 3, "b": 4}]

    @task
    def combine(a, b):
        return a * 10 + b

    combine.expand_kwargs(pairs())

    BashOperator.partial(task_id="bash_mapped", do_xcom_push=True).expand(
        bash_command=["echo one", "echo two"],
    )


corpus_mapping()
