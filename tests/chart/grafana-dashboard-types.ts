// The dashboard JSON checked against Grafana's own published types (npm @grafana/schema):
// the classic dashboard model (`Dashboard`, `Panel`, `RowPanel`, `VariableModel`) and, per
// panel type, the plugin's generated `Options` and `FieldConfig`. JSON files carry enum values
// as plain strings, so `Json<T>` turns each string enum into the union of its values; nothing
// else is loosened, and object literals keep TypeScript's excess-property check, so a
// misspelt key fails like a wrong value does.
import type { Dashboard, DataSourceRef, FieldConfigSource, Panel, RowPanel } from '@grafana/schema';
import type { FieldConfig as RawFieldConfig } from '@grafana/schema/dist/types/raw/dashboard/x/types.gen';
import type * as TimeSeries from '@grafana/schema/dist/types/raw/composable/timeseries/panelcfg/x/types.gen';
import type * as Stat from '@grafana/schema/dist/types/raw/composable/stat/panelcfg/x/types.gen';
import type * as StateTimeline from '@grafana/schema/dist/types/raw/composable/statetimeline/panelcfg/x/types.gen';
import type { DataQuery } from '@grafana/schema/dist/types/common/common.gen';

type Json<T> = T extends string
  ? string extends T
    ? string
    : `${T}`
  : T extends number | boolean | null | undefined
    ? T
    : T extends Array<infer U>
      ? Array<Json<U>>
      : T extends object
        ? { [K in keyof T]: Json<T[K]> }
        : T;

// The Prometheus data source's query model lives in Grafana's Prometheus plugin, not in
// @grafana/schema; these are the fields its query editor writes.
type PrometheusQuery = Json<Omit<DataQuery, 'datasource'>> & {
  datasource: Json<DataSourceRef>;
  expr: string;
  legendFormat?: string;
  range?: boolean;
  instant?: boolean;
  editorMode?: 'code' | 'builder';
  format?: 'time_series' | 'table' | 'heatmap';
  interval?: string;
  exemplar?: boolean;
};

type StrictFieldConfigSource<Custom> = Omit<Json<FieldConfigSource>, 'defaults'> & {
  defaults: Json<Omit<RawFieldConfig, 'custom'>> & { custom?: Json<Custom> };
};

type TypedPanel<Type extends string, Options, Custom> = Omit<
  Json<Panel>,
  'type' | 'options' | 'fieldConfig' | 'targets' | 'datasource'
> & {
  type: Type;
  datasource: Json<DataSourceRef>;
  options: Json<Options>;
  fieldConfig: StrictFieldConfigSource<Custom>;
  targets: PrometheusQuery[];
};

type TideshiftPanel =
  | TypedPanel<'timeseries', TimeSeries.Options, TimeSeries.FieldConfig>
  | TypedPanel<'stat', Stat.Options, never>
  | TypedPanel<'state-timeline', StateTimeline.Options, StateTimeline.FieldConfig>;

export type StrictDashboard = Omit<Json<Dashboard>, 'panels'> & {
  panels: Array<TideshiftPanel | (Json<Omit<RowPanel, 'panels'>> & { panels: TideshiftPanel[] })>;
};
