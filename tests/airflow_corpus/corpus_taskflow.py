"""TaskFlow: @dag and @task, values passed between tasks, multiple_outputs."""

import json
from datetime import datetime

from airflow.decorators import dag, task


@dag(schedule=None, start_date=datetime(2024, 1, 1), catchup=False, tags=["corpus"])
def corpus_taskflow():
    """Extract, transform and load an order summary."""

    @task()
    def extract():
        data_string = '{"1001": 301.27, "1002": 433.21, "1003": 502.22}'
        return json.loads(data_string)

    @task(multiple_outputs=True)
    def transform(order_data_dict: dict):
        total = 0
        for value in order_data_dict.values():
            total += value
        return {"total_order_value": round(total, 2), "count": len(order_data_dict)}

    @task()
    def load(total_order_value: float, count: int):
        print(f"Total order value is: {total_order_value:.2f} over {count} orders")
        return total_order_value

    summary = transform(extract())
    load(summary["total_order_value"], summary["count"])


corpus_taskflow()
