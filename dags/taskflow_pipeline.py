"""A TaskFlow pipeline: functions become tasks, return values travel by XCom."""

from datetime import datetime

from scheduler import dag, task


@dag(schedule="@daily", start_date=datetime(2024, 1, 1), catchup=False, tags=["example", "taskflow"])
def taskflow_pipeline():
    @task
    def extract() -> dict[str, float]:
        return {"1001": 301.27, "1002": 433.21, "1003": 502.22}

    @task
    def transform(orders: dict) -> dict:
        return {"total": round(sum(orders.values()), 2), "count": len(orders)}

    @task
    def load(summary: dict) -> str:
        message = f"{summary['count']} orders, total {summary['total']:.2f}"
        print(message)
        return message

    load(transform(extract()))


taskflow_pipeline()
