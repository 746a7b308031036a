"""The model version the stream scores with: the one Redis's pointer names, loaded from the
model store and broadcast to the executors once per version; lists the stream wrote under a
version readers have left are removed."""

from __future__ import annotations

import logging
from dataclasses import asdict

from pyspark import Broadcast
from pyspark.sql import SparkSession

from streamrec.errors import ModelStoreError
from streamrec.model import store
from streamrec.model.store import ItemModel
from streamrec.redis_lists import RedisClient, decoded, delete_version
from streamrec.schemas import redis_layout as L
from streamrec.schemas.config import FeedbackConfig

log = logging.getLogger(__name__)


class ModelHolder:
    """The live model and its broadcast, renewed when the batch job publishes a new version
    (checked before every micro-batch: one Redis GET)."""

    def __init__(
        self,
        spark: SparkSession,
        model_store: str,
        client: RedisClient,
        prefix: str,
        feedback: FeedbackConfig,
    ) -> None:
        self.spark = spark
        self.model_store = model_store
        self.feedback = asdict(feedback)  # what the stream weighs events with
        self.client, self.prefix = client, prefix
        self.model: ItemModel | None = None
        self.broadcast: Broadcast[ItemModel] | None = None
        # True from loading a new version until the lists query has rescored its recent users.
        self.switched = False

    def live_version(self) -> str | None:
        """The version readers follow: Redis's pointer, so the stream's lists land where apps
        read them even when a batch run died between switching Redis and the model store. The
        store's ``current`` only when Redis has no pointer (restarted empty)."""
        pointer = decoded(self.client.get(L.current_model_key(self.prefix)))
        return pointer or store.current_version(self.model_store)

    def current(self) -> tuple[ItemModel, Broadcast[ItemModel]] | None:
        version = self.live_version()
        if version is not None and (self.model is None or self.model.version != version):
            try:
                model = store.load_item_model(self.model_store, version)
                params = store.check_foldable(model, self.feedback)
            except ModelStoreError:
                log.exception(
                    "stream: model %s cannot be loaded; keeping %s",
                    version,
                    self.model.version if self.model else "none",
                )
            else:
                old, previous = self.broadcast, self.model
                self.model = model
                self.broadcast = self.spark.sparkContext.broadcast(model)
                if old is not None:
                    old.unpersist()  # executors drop the previous version's factors
                log.info(
                    "stream: loaded model %s (%d items), folding in with regParam %g alpha %g",
                    version,
                    len(model.item_ids),
                    params.reg_param,
                    params.alpha,
                )
                self.switched = True
                if previous is not None:
                    self._drop_stale_lists(previous.version)
        if self.model is None or self.broadcast is None:
            return None
        return self.model, self.broadcast

    def _drop_stale_lists(self, version: str) -> None:
        """A micro-batch that ran while the batch job switched versions wrote its lists under
        the previous version after the switch had removed that version's keys: nobody reads
        them (readers follow the pointer), so they are removed here, one micro-batch later."""
        pointer = self.client.get(L.current_model_key(self.prefix))
        if pointer is not None and decoded(pointer) != version:
            removed = delete_version(self.client, self.prefix, version)
            if removed:
                log.info(
                    "stream: removed %d keys written under %s after the switch", removed, version
                )
