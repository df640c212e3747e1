/* Figure export (dashboard/figure_export.py): PNG and SVG from the figure on screen with
 * Plotly.toImage, PDF through the server (POST /_export/pdf, the SVG converted by cairosvg).
 * C2-map images of a figure are inlined as data URLs, so SVG and PDF are self-contained.
 * Optional stamp (dataset, model checksum, software version, date) in the bottom-right corner. */
(function () {
  'use strict';

  function save(blob, filename) {
    const a = document.createElement('a');
    a.href = URL.createObjectURL(blob);
    a.download = filename;
    document.body.appendChild(a);
    a.click();
    setTimeout(function () { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
  }

  function dataUrl(url) {  // a same-origin image as a data URL (PNG maps of the PNG route)
    return fetch(url, {credentials: 'same-origin'}).then(function (r) {
      if (!r.ok) { throw new Error('image ' + url + ': ' + r.status); }
      return r.blob();
    }).then(function (blob) {
      return new Promise(function (resolve) {
        const fr = new FileReader();
        fr.onload = function () { resolve(fr.result); };
        fr.readAsDataURL(blob);
      });
    });
  }

  function inlineImages(layout) {
    const images = layout.images || [];
    return Promise.all(images.map(function (im) {
      if (!im || typeof im.source !== 'string' || im.source.startsWith('data:')) { return im; }
      return dataUrl(im.source).then(function (src) { return Object.assign({}, im, {source: src}); },
                                     function () { return im; });
    })).then(function (inlined) { if (images.length) { layout.images = inlined; } return layout; });
  }

  function stamped(layout, full, text) {
    const extra = 18;
    const margin = Object.assign({}, full.margin);
    layout.margin = {l: margin.l, r: margin.r, t: margin.t, b: margin.b + extra, pad: margin.pad || 0, autoexpand: false};
    layout.height = full.height + extra;
    layout.width = full.width;
    const date = new Date().toISOString().slice(0, 10);
    layout.annotations = (layout.annotations || []).concat([{
      text: text + ' · exported ' + date, xref: 'paper', yref: 'paper', x: 1, y: 0, xanchor: 'right',
      yanchor: 'top', yshift: -(margin.b + extra - 16), showarrow: false, name: 'ainerd-stamp',
      font: {size: 9, color: '#555'}}]);
    return layout;
  }

  function exportFigure(graphId, format, stampText) {
    const gd = document.querySelector('#' + CSS.escape(graphId) + ' .js-plotly-plot');
    if (!gd || !gd._fullLayout || !window.Plotly) { return Promise.reject(new Error('no figure ' + graphId)); }
    const full = gd._fullLayout;
    let layout = JSON.parse(JSON.stringify(gd.layout));
    layout.width = full.width;
    layout.height = full.height;
    if (stampText) { layout = stamped(layout, full, stampText); }
    const imageFormat = format === 'png' ? 'png' : 'svg';
    return inlineImages(layout).then(function (lay) {
      return window.Plotly.toImage({data: gd.data, layout: lay, config: {staticPlot: true}},
                                   {format: imageFormat, width: lay.width, height: lay.height,
                                    scale: imageFormat === 'png' ? 2 : 1});
    }).then(function (url) {
      if (imageFormat === 'png') {
        return fetch(url).then(function (r) { return r.blob(); });
      }
      const svg = decodeURIComponent(url.slice(url.indexOf(',') + 1));
      const blob = new Blob([svg], {type: 'image/svg+xml'});
      if (format === 'svg') { return blob; }
      return fetch('/_export/pdf?name=' + encodeURIComponent(graphId), {
        method: 'POST', body: blob, credentials: 'same-origin', headers: {'Content-Type': 'image/svg+xml'}
      }).then(function (r) {
        if (!r.ok) { return r.text().then(function (t) { throw new Error(t); }); }
        return r.blob();
      });
    }).then(function (blob) {
      save(blob, graphId + '.' + format);
      return graphId + '.' + format;
    });
  }

  window.ainerdExport = exportFigure;
  window.dash_clientside = Object.assign({}, window.dash_clientside, {
    ainerd_export: {
      /* Input: every export button's n_clicks (pattern-matching ids {type: 'figure-export', graph,
       * format}); State: every card's stamp checkbox and the dataset's stamp text. */
      run: function (clicks, stampValues, stampText) {
        const ctx = window.dash_clientside.callback_context;
        const noUpdate = window.dash_clientside.no_update;
        if (!ctx.triggered || !ctx.triggered.length || !ctx.triggered[0].value) { return noUpdate; }
        const trig = JSON.parse(ctx.triggered[0].prop_id.split('.n_clicks')[0]);
        const stampIds = (ctx.states_list && ctx.states_list[0]) || [];
        let stampOn = true;
        stampIds.forEach(function (s) { if (s.id && s.id.graph === trig.graph) { stampOn = !!s.value; } });
        const status = document.getElementById(trig.graph + '-export-status');
        if (status) { status.textContent = 'exporting ' + trig.format.toUpperCase() + '…'; }
        exportFigure(trig.graph, trig.format, stampOn ? (stampText || '') : '').then(function (name) {
          if (status) { status.textContent = 'saved ' + name; }
        }, function (err) {
          if (status) { status.textContent = 'export failed: ' + err.message; }
        });
        return noUpdate;
      }
    }
  });
}());
