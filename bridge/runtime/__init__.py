"""The running bridge's parts, one job each; :mod:`bridge.app` builds and connects them.

```
  OCPP server ──> stations.StationEvents   boots, statuses, transactions, meter values
                   (the observed fleet:     -> sessions, meters, voltages, last seen,
                    sessions, meters, grid)    counters; asks for a plan soon
  VEN ─────────> dr.DrEvents               events decided and stored, opts applied and
                   (events, baselines)        sent to the VTN; plans at once
  web ─────────> operator.Operator         holds, opt-outs, unavailability
  planning.ReplanLoop ─> planning.Planner  when to plan (coalesced, storms settled, a
                                            voltage monitor's sag at once); fleet +
                                            events + holds -> plan (in the planning
                                            process, or thread for a small fleet)
                                            -> dispatcher
  dispatcher ──> voltage_controls.VoltageControls  per station, once its capabilities are
                   (monitors, DER control)    known and the limits are out: its voltage
                                              monitors and VoltWatt curve as the rule asks
  reports.Reports                          the VEN's report values; samples and site-load
                                            rows into the store
  retention.Pruner                         on the reports' timer: rows older than
                                            storage.retention out of the store, in batches
  view.RuntimeView ──> web                 read-only copies (bridge.web.port)
```
"""
