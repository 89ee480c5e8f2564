"""The task registry: what a task is (metrics, direction, loss, schemas), one registered class per task.

Code that behaves differently per task asks the :class:`Task` (``get_task(name)``)
instead of comparing task names. Importing this package does not import torch:
Serve's build step and the package reader use it too.
"""

from tumorbench.tasks.base import Task, TaskError, get_task, list_tasks, register_task
from tumorbench.tasks.classification import Classification
from tumorbench.tasks.gan import Gan
from tumorbench.tasks.segmentation import Segmentation

__all__ = ["Classification", "Gan", "Segmentation", "Task", "TaskError", "get_task", "list_tasks", "register_task"]
